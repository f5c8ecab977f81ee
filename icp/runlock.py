"""One trainer per run directory: an exclusive ``flock`` on ``RUN_DIR/train.lock``.

A second ``icp train`` on the same directory (a user's second launch, or a requeued job that starts while the old
one is still being killed) is refused with one line, instead of training the run twice and interleaving writes.
The kernel drops a ``flock`` when its process dies, however it dies, so a killed trainer never leaves the run
stuck. The file holds the holder's pid, host and start time, for the message only.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from icp.schema import ConfigError

LOCK_NAME = "train.lock"


class RunBusy(ConfigError):
    """Another process trains this run directory."""


def _stamp(fd: int) -> None:
    """Write the holder's pid, host and start time into a lock file just taken (for the messages only)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)


def _holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"


@contextlib.contextmanager
def hold(run_dir: str | Path, wait_s: float = 0.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the run's lock for the body; wait up to ``wait_s`` seconds for another holder to let go."""
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise RunBusy(f"{run_dir} is being trained by another process ({holder}); "
                                  "wait for it or stop it first") from None
                time.sleep(poll_s)
        _stamp(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def busy(run_dir: str | Path) -> bool:
    """Whether a live process holds the run's lock (a trainer: its process is alive, wherever the lock is seen).
    Probed with a non-blocking exclusive ``flock`` released at once; a run without a lock file is not busy. A
    trainer that starts during the probe waits for the lock (``Trainer.run``'s ``lock_wait_s`` in a job)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:  # a file system without flock cannot say: not busy by this test
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- the checkout's sweep
SWEEP_LOCK = "icp-sweep.lock"  # in Snakemake's own folder, beside (not in) its locks/, which a Snakemake may wipe
_held: list[int] = []  # the open descriptor of this process's sweep lock: held until the process ends


def hold_checkout(folder: str | Path = ".snakemake") -> tuple[bool, str]:
    """Take this checkout's sweep lock for the rest of this process (every Snakemake of the workflow tries at
    start): (True, "") when taken, else (False, what the holder wrote: its pid, host and start). The kernel drops it
    when the process dies, however it dies, so a held lock always means a live Snakemake."""
    if _held:
        return True, ""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / SWEEP_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        return False, holder
    _stamp(fd)
    _held.append(fd)
    return True, ""


def clear_stale_locks(folder: str | Path = ".snakemake") -> Optional[str]:
    """Remove Snakemake's own locks (``locks/*.lock``) that a killed Snakemake left: only call it holding the sweep
    lock (then no other Snakemake of this workflow is alive here, so they are stale). One line, or None."""
    stale = sorted((Path(folder) / "locks").glob("*.lock"))
    for path in stale:
        path.unlink(missing_ok=True)
    return (f"removed {len(stale)} stale Snakemake lock(s) in {Path(folder) / 'locks'} (left by a Snakemake that was "
            f"killed; no other Snakemake runs in this checkout)") if stale else None
