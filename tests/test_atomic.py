"""The one atomic file writer (icp.atomic.write): text, bytes or a function's bytes, the old file or the new one,
never half of one, no temporary file left behind, and a write that fails for want of space names its target."""
import errno

import pytest

from icp import atomic
from icp.cli import unwritable


def test_text_bytes_and_a_writing_function_replace_the_file_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "t.txt"
    assert atomic.write("α ± 1\n", path, mkdir=True) == path and path.read_text(encoding="utf-8") == "α ± 1\n"
    atomic.write(b"\x00\x01", path)
    assert path.read_bytes() == b"\x00\x01"
    atomic.write(lambda fh: fh.write(b"from a function"), path, previous=tmp_path / "sub" / "t.prev")
    assert path.read_bytes() == b"from a function" and (tmp_path / "sub" / "t.prev").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.prev", "t.txt"]


def test_a_failed_write_keeps_the_old_file_and_names_its_target(tmp_path):
    path = tmp_path / "record.json"
    atomic.write("old", path)

    def full(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write on a full disk: no file name

    with pytest.raises(OSError) as exc:
        atomic.write(full, path, previous=tmp_path / "record.prev.json")
    assert exc.value.filename == str(path) and unwritable(exc.value).startswith(f"cannot write {path}: ")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
