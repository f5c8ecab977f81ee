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
    killed (SIGKILL: out of memory or an admin)

A controller that does not answer is not a verdict on any job: :func:`slurm_states` raises :class:`Unreachable`
then (its callers keep waiting), and :func:`unreachable` tells an ``sbatch`` that failed for that reason, which
:func:`retry_delays` retries, from one refusal to the next.

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


class Unreachable(RuntimeError):
    """The SLURM controller did not answer (``squeue`` failed): no job's state is known, none is over."""


# what sbatch, squeue and scontrol print when slurmctld is down, restarting or too busy to answer
_UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|connect failure|Connection refused|"
                          r"Slurm temporarily unable|Zero Bytes were transmitted|slurm_load_jobs error: "
                          r"(Unable to contact|Socket timed out)|Transport endpoint|Resource temporarily unavailable")


def unreachable(error: object) -> bool:
    """Whether a failed ``sbatch`` (its exception or text) failed because the controller did not answer: worth a
    retry, where a refused job (a bad partition, an account, a limit) is not."""
    return bool(_UNREACHABLE.search(str(error)))


def retry_delays(total_s: float, first_s: float = 5.0, most_s: float = 60.0) -> list[float]:
    """Seconds to wait before each retry of a submission the controller did not answer: doubling from ``first_s``
    up to ``most_s`` each, until they add up to ``total_s`` (the last one shortened to fit)."""
    delays, wait = [], first_s
    while sum(delays) < total_s:
        delays.append(min(wait, most_s, total_s - sum(delays)))
        wait *= 2
    return delays


def _run(cmd: list[str]) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """job id -> SLURM state (``CANCELLED by 0`` is ``CANCELLED``), for every id: one ``squeue`` for all of them, then
    one ``sacct`` for those no longer queued; :data:`UNKNOWN` where neither knows the job. Raises
    :class:`Unreachable` when ``squeue`` fails (the controller is down or restarting): then nothing is known, and a
    job must not be taken for gone."""
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    states: dict[str, str] = {}
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T"])
    if out is None:
        # squeue -j exits 1 for ids it no longer knows only when all are gone ("Invalid job id specified"): ask
        # whether the controller answers at all before calling every job lost
        if _run(["squeue", "--me", "-h", "-o", "%i"]) is None:
            raise Unreachable("the SLURM controller does not answer (squeue failed)")
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


# a process the kernel or a user killed: SLURM's "task 0: Killed" (srun) or a pack member's negative exit status
_KILLED_LOG = re.compile(r"task \d+: Killed|^Killed\b", re.MULTILINE)
SIGNALS = {
    "SIGKILL": "killed (SIGKILL: out of memory or an admin)",
    "SIGTERM": "terminated (SIGTERM: a scheduler's stop or a kill)",
    "SIGSEGV": "crashed (SIGSEGV: a segmentation fault in native code)",
    "SIGBUS": "crashed (SIGBUS: a bus error, often a full /dev/shm)",
    "SIGABRT": "aborted (SIGABRT: native code gave up)",
}


def signal_cause(signum: int) -> str:
    """The line for a process ended by signal ``signum`` (a child's ``returncode`` is its negative)."""
    import signal

    try:
        name = signal.Signals(abs(signum)).name
    except ValueError:
        return f"killed by signal {abs(signum)}"
    return SIGNALS.get(name, f"killed by {name}")


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
    tail = _tail(logs)
    named = from_error(error) or from_error(tail)
    if named:
        return named
    if state not in SCHEDULER and not error and _KILLED_LOG.search(tail):
        return SIGNALS["SIGKILL"]  # a job that SLURM saw fail because its trainer was killed, not SLURM's own stop
    if state == "TIMEOUT":
        return SCHEDULER["TIMEOUT"].format(requeues="" if requeues is None else f" after {requeues} requeues")
    if state in SCHEDULER:
        return SCHEDULER[state]
    if error:
        return error
    status = (record or {}).get("status")
    n = len((record or {}).get("epochs") or [])
    said = f"after {n} recorded epoch{'s' * (n != 1)}" if status else "before it wrote a record"
    if state in ("FAILED", "COMPLETED"):
        return f"the job ended ({state}) without a result {said}"
    if state == UNKNOWN:
        return f"the job left the queue without a result {said}, and SLURM cannot say why"
    return f"the job ended {state} {said}"
