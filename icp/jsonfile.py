"""JSON files that several processes share (run records, pack queues, job files): written atomically
(:func:`icp.atomic.write`), read tolerantly. A reader sees the old file or the new one, never half of one, and treats
a file that is absent or unreadable (another process may be about to create it) as ``None``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from icp import atomic


def write(obj: Any, path: str | Path, indent: int = 1) -> None:
    """Atomic JSON write (:func:`icp.atomic.write`): the old file or the new one, never half of one."""
    atomic.write(json.dumps(obj, indent=indent) + "\n", path)


def read(path: str | Path) -> Optional[Any]:
    """The file's JSON value, or None when it is absent or cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
