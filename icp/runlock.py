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
from typing import Iterator

from icp.config import ConfigError

LOCK_NAME = "train.lock"


class RunBusy(ConfigError):
    """Another process trains this run directory."""


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
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
                    raise RunBusy(f"{run_dir} is being trained by another process ({holder}); "
                                  "wait for it or stop it first") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
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
