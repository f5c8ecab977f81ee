"""JSON files that several processes share (run records, pack queues, job files): written atomically, read
tolerantly. A writer goes through a temporary file in the same directory and ``os.replace``, so a reader sees
the old file or the new one, never half of one; a reader treats a file that is absent or unreadable (another
process may be about to create it) as ``None``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional


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


def write(obj: Any, path: str | Path, indent: int = 1) -> None:
    """Atomic JSON write (temporary file + ``os.replace``); the temporary file is removed on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with naming_path(path):
            tmp.write_text(json.dumps(obj, indent=indent) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: str | Path) -> Optional[Any]:
    """The file's JSON value, or None when it is absent or cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
