"""What stopped a run, in one line: the scheduler's word for its job and the run's own record, read together.

:func:`slurm_states` asks SLURM about any number of jobs with one ``squeue`` call (jobs still queued or running) and
one ``sacct`` call (jobs that have left the queue), so a sweep's watcher costs two short commands per poll however
many runs are in flight. :func:`describe` turns a job's final state, the record and the job's log into the line
that the workflow prints and the record keeps (``error``)::

    cancelled by the scheduler (CANCELLED: scancel, an admin or a dependency)
    out of memory: the job went over its memory limit (OUT_OF_MEMORY; raise mem_mb)
    no space left on device: results/runs/x/last.pt
    node failure (NODE_FAIL): the node the job ran on went down
    time limit reached with its requeues used up (TIMEOUT after 5 requeues; raise runtime or max_requeues)

Nothing here imports torch.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterable, Optional

# SLURM job states in which a job may still produce its result (a requeued job waits in the queue again)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING", "SUSPENDED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT", "POWER_UP_NODE"}
UNKNOWN = "UNKNOWN"  # SLURM cannot say (no accounting, or the job is too old for it)

SCHEDULER = {
    "CANCELLED": "cancelled by the scheduler (CANCELLED: scancel, an admin or a dependency)",
    "OUT_OF_MEMORY": "out of memory: the job went over its memory limit (OUT_OF_MEMORY; raise mem_mb)",
    "NODE_FAIL": "node failure (NODE_FAIL): the node the job ran on went down",
    "BOOT_FAIL": "node failure (BOOT_FAIL): the node did not boot",
    "PREEMPTED": "preempted (PREEMPTED) and not requeued",
    "DEADLINE": "deadline reached (DEADLINE) before the job could finish",
    "TIMEOUT": "time limit reached with its requeues used up (TIMEOUT{requeues}; raise runtime or max_requeues)",
}


def _run(cmd: list[str]) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> SLURM state (``CANCELLED by 0`` is ``CANCELLED``), for every id: one ``squeue`` for all of them, then
    one ``sacct`` for those no longer queued; :data:`UNKNOWN` where neither knows the job."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    states: dict[str, str] = {}
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T"])
    for line in (out or "").splitlines():
        jid, _, state = line.partition("|")
        states[jid.split("_")[0].strip()] = state.strip().split()[0] if state.strip() else UNKNOWN
    gone = [j for j in ids if j not in states]
    if gone:
        out = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(gone), "-o", "JobIDRaw,State"])
        for line in (out or "").splitlines():
            jid, _, state = line.partition("|")
            if jid.strip() in gone and state.strip():
                states[jid.strip()] = state.strip().split()[0]
    return {j: states.get(j, UNKNOWN) for j in ids}


_ENOSPC = re.compile(r"\[Errno 28\] No space left on device: '([^']+)'|No space left on device")
_GPU_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError")


def from_error(error: str) -> Optional[str]:
    """A named cause in an error text (the record's error or a log): a full disk (with the path) or GPU memory."""
    found = _ENOSPC.search(error or "")
    if found:
        return f"no space left on device: {found.group(1)}" if found.group(1) else "no space left on device"
    if _GPU_OOM.search(error or ""):
        return "out of GPU memory (CUDA out of memory; lower train.batch_size or runs_per_gpu)"
    return None


def _tail(paths: Iterable[Path], size: int = 200_000) -> str:
    text = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - size))
                text.append(fh.read().decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(text)


def describe(state: str, record: Optional[dict], logs: Iterable[Path] = (), requeues: Optional[int] = None) -> str:
    """One line naming why a run's job ended without a final record. ``state``: its SLURM state (or ``UNKNOWN``);
    ``record``: the run's record (its error); ``logs``: the job's log files, searched for a cause the record could
    not keep (a full disk can stop the record's own write)."""
    error = (record or {}).get("error") or ""
    named = from_error(error) or from_error(_tail(logs))
    if named:
        return named
    if state == "TIMEOUT":
        return SCHEDULER["TIMEOUT"].format(requeues="" if requeues is None else f" after {requeues} requeues")
    if state in SCHEDULER:
        return SCHEDULER[state]
    if error:
        return error
    status = (record or {}).get("status")
    if state in ("FAILED", "COMPLETED"):
        return f"the job ended ({state}) without a result; the record says {status or 'nothing'}"
    if state == UNKNOWN:
        return f"the job left the queue without a result and SLURM cannot say why; the record says {status or 'nothing'}"
    return f"the job ended {state}; the record says {status or 'nothing'}"
