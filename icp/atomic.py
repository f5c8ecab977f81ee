"""The one atomic file writer: run records, checkpoints, pack files, tables, summaries, figures and prepared data
files all go through :func:`write`. It writes a temporary file in the target's directory, flushes it to disk
(``fsync``) and ``os.replace``-s it over the target, so a reader (or a process resumed after a kill, a crash or a
full disk) sees the old file or the new one, never half of one; on any failure the temporary file is removed and
the target is left as it was. A write that fails for want of space names the target file
(:func:`naming_path`), which :func:`icp.cli.unwritable` turns into the line ``cannot write PATH: reason``."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

Content = Union[str, bytes, bytearray, memoryview, Callable[[BinaryIO], object]]


@contextlib.contextmanager
def naming_path(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError without a file name (a failed ``write`` on a full disk) as one that names ``path``:
    ``[Errno 28] No space left on device: 'runs/x/last.pt'``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise


def write(content: Content, path: str | Path, mkdir: bool = False, previous: Optional[str | Path] = None) -> Path:
    """Write ``content`` to ``path`` atomically and durably; return ``path``. ``content`` is text (written as UTF-8),
    bytes, or a function that writes the file's bytes to the binary file object it is given (``savefig``,
    ``copyfileobj``). ``mkdir`` makes the directory first; with ``previous`` the file that ``path`` holds (if any)
    is moved there just before the new one replaces it (``path`` is then missing for an instant, but only once the
    new file is complete on disk)."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with naming_path(path), open(tmp, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
