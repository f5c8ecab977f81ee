"""Several runs in one GPU job (``runs_per_gpu`` in the profile): small models leave a GPU mostly idle.

Each run is still its own Snakemake job, its own launcher, record, lock and ``last.pt``; only the scheduler job is
shared. The launchers of a sweep meet in a pack directory (``<runs_dir>/.packs``, shared by the login node's
processes):

1. A launcher queues its run (``queue/<key>.json``, naming its pid and host).
2. Under the directory's ``flock``, a launcher whose run is still queued forms a pack when ``k`` runs are queued, or
   when its own request has waited ``wait_s`` (a sweep's tail, or a run that no other run waits beside): it takes
   its own run and the oldest others (requests of launchers that died are dropped), writes a claim for each and
   submits one :class:`PackJob` for them.
3. The other launchers of that pack find their claim and wait on the same job's result; each reports only its run.

:class:`PackJob` trains each run in its own ``icp train`` process, all at once on the job's GPU, with the job's
CPUs shared out (``OMP_NUM_THREADS``); a run's output goes to ``RUN_DIR/submitit/<job id>_train.log``. It is
checkpointable: on SLURM's warning signal each child records ``requeued`` (``icp train`` handles SIGUSR2) and the
requeued job trains again, every run resuming from its own ``last.pt``; runs already final are not started again.

A SLURM job stopped from outside (``scontrol requeue``, a preemption that requeues, a node failure, ``scancel``) gets
SIGTERM, then SIGKILL: its children record ``interrupted`` and end, and the pack then returns no result (it waits
for the SIGKILL), as submitit's own handler ignores SIGTERM in a one-run job. A result would tell the workflow that
the job is over while SLURM runs it again; without one the workflow goes on waiting for the requeued job, which
resumes every run, or names the job's end (cancelled, node failure) as it does a one-run job's.
Nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional, Sequence

import submitit

from icp import atomic, faults, jsonfile

FINAL = ("complete", "diverged")


def read_json(path: Path) -> dict:
    """A shared JSON file as a dict; ``{}`` while it is absent or being replaced (:func:`icp.jsonfile.read`)."""
    return jsonfile.read(path) or {}


write_json = jsonfile.write


def child_error(log: Path) -> str:
    """The last ``icp: error:`` line, or the last ``Type: message`` line, of a run's log."""
    import re

    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for pattern in (r"^icp: error: ", r"^\s*[\w.]*(Error|Exception|Interrupt)\b"):
        found = [ln.strip() for ln in lines if re.match(pattern, ln)]
        if found:
            return found[-1]
    return ""


def exited(child: subprocess.Popen) -> bool:
    """Whether a child process has exited, without reaping it and without Popen's waitpid lock (safe inside a
    signal handler that interrupted a ``child.wait()``): ``waitid`` with ``WNOWAIT`` only peeks."""
    if child.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped elsewhere
        return True


class PackJob(submitit.helpers.Checkpointable):
    """The submitted callable of a pack: ``icp train`` of each run in its own process, all at once."""

    def __init__(self, runs: Sequence[dict], workdir: str, executor: str, cpus: int, stop_wait_s: float = 60.0):
        self.runs = [dict(r) for r in runs]  # each {"run_id", "run_dir", "train_args"}
        self.workdir = workdir
        self.executor = executor
        self.cpus = max(1, cpus)
        self.stop_wait_s = stop_wait_s
        self._children: dict[str, subprocess.Popen] = {}
        self._terminated = False

    def _on_sigterm(self, signum, frame) -> None:
        """SLURM stops the job (requeue, preemption, node failure, cancel): it signals the children too; their
        end must not become the pack's result."""
        self._terminated = True
        print(f"icp pack: {signal.Signals(signum).name}: the scheduler stops this job; no result is written, so "
              "that a requeued job trains its runs again", file=sys.stderr, flush=True)

    def __call__(self) -> dict:
        os.chdir(self.workdir)
        if self.executor == "slurm" and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            job_id = str(submitit.JobEnvironment().job_id)
        except RuntimeError:  # the debug executor
            job_id = "debug"
        todo = [r for r in self.runs  # a run done before a requeue is not started again
                if read_json(Path(r["run_dir"]) / "record.json").get("status") not in FINAL]
        # ICP_DEVICE_SHARED_BY: the runs sharing this job's device, so each record counts its share of the device
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, self.cpus // len(self.runs))), "ICP_JOB_ID": job_id,
               "ICP_EXECUTOR": self.executor, "ICP_DEVICE_SHARED_BY": str(max(1, len(todo)))}
        logs = {}
        for run in todo:
            log = Path(run["run_dir"]) / "submitit" / f"{job_id}_train.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            logs[run["run_id"]] = log
            with open(log, "a") as fh:
                self._children[run["run_id"]] = subprocess.Popen(
                    [sys.executable, "-m", "icp", "train", *run["train_args"]], stdout=fh, stderr=subprocess.STDOUT,
                    env=env)
        for child in self._children.values():
            child.wait()
        if self._terminated:  # SIGKILL follows within SLURM's KillWait; exit without a result if it does not
            time.sleep(self.stop_wait_s * 5)
            os._exit(128 + signal.SIGTERM)
        results = {}
        for run in self.runs:
            rec = read_json(Path(run["run_dir"]) / "record.json")
            status = rec.get("status", "failed")
            error = rec.get("error")
            if status not in FINAL and run["run_id"] in logs:
                code = self._children[run["run_id"]].returncode
                if code is not None and code < 0:  # killed by a signal: its record could not say so
                    error = faults.signal_cause(code)
                error = error or child_error(logs[run["run_id"]]) or f"icp train exited {code}"
                status = status if status != "running" else "failed"
            results[run["run_id"]] = {"status": status, "error": error}
        return results

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """SLURM's warning: every run saves and records ``requeued`` (SIGUSR2, which SLURM may also have sent them:
        ``icp train`` acts on the first), then the pack is submitted again as it was."""
        for child in self._children.values():
            if not exited(child):
                child.send_signal(signal.SIGUSR2)
        # wait for every child to have saved and exited; not with child.wait()/poll(): this runs inside submitit's
        # signal handler, while the interrupted __call__ holds Popen's waitpid lock in child.wait(), so they could
        # never see a child exit (the pack idled to the wait's end, past SLURM's kill). exited() only peeks.
        deadline = time.monotonic() + self.stop_wait_s
        while time.monotonic() < deadline and not all(exited(c) for c in self._children.values()):
            time.sleep(0.1)
        return submitit.helpers.DelayedSubmission(PackJob(self.runs, self.workdir, self.executor, self.cpus,
                                                                    self.stop_wait_s))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_children": {}, "_terminated": False}


# ------------------------------------------------------------------------------------------ launchers meet
def _key(run_id: str) -> str:
    return run_id.replace("/", "__")


def _alive(request: dict) -> bool:
    if request.get("host") != socket.gethostname():
        return True  # cannot tell: trust it
    try:
        os.kill(int(request["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


class Meeting:
    """The pack directory: a queue of runs waiting for a pack, the packs formed, and a claim per packed run."""

    def __init__(self, pack_dir: str | Path):
        self.dir = Path(pack_dir)
        for sub in ("queue", "claims", "packs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.dir / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def enqueue(self, run: dict) -> dict:
        request = {**run, "pid": os.getpid(), "host": socket.gethostname(), "queued_at": time.time()}
        with self.locked():
            (self.dir / "claims" / _key(run["run_id"])).unlink(missing_ok=True)  # a claim of an earlier sweep
            write_json(request, self.dir / "queue" / f"{_key(run['run_id'])}.json")
        return request

    def claim(self, request: dict, k: int, wait_s: float) -> tuple[Optional[Path], list[dict]]:
        """One attempt: (pack folder, runs) when this launcher formed a pack (it must submit it), (pack folder, [])
        when another launcher packed this run, (None, []) while it waits."""
        key = _key(request["run_id"])
        with self.locked():
            claim = self.dir / "claims" / key
            if claim.exists():
                return Path(claim.read_text().strip()), []
            queued = []
            for path in self.dir.glob("queue/*.json"):
                other = read_json(path)
                if not other or not _alive(other):
                    path.unlink(missing_ok=True)
                    continue
                queued.append(other)
            if len(queued) < k and time.time() - request["queued_at"] < wait_s:
                return None, []
            others = sorted((q for q in queued if q["run_id"] != request["run_id"]), key=lambda q: q["queued_at"])
            members = [request, *others[: k - 1]]
            folder = self.dir / "packs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            folder.mkdir(parents=True)
            runs = [{k_: m[k_] for k_ in ("run_id", "run_dir", "train_args")} for m in members]
            write_json({"runs": runs}, folder / "pack.json")
            for m in members:
                atomic.write(str(folder), self.dir / "claims" / _key(m["run_id"]))
                (self.dir / "queue" / f"{_key(m['run_id'])}.json").unlink(missing_ok=True)
            return folder, runs

    def meet(self, run: dict, k: int, wait_s: float, poll_s: float = 0.5) -> tuple[Path, list[dict]]:
        request = self.enqueue(run)
        while True:
            folder, runs = self.claim(request, k, wait_s)
            if folder is not None:
                return folder, runs
            time.sleep(poll_s)
