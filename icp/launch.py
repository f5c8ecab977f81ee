"""Submit one run's training through submitit and wait for it: the job of the Snakefile's training rule.

    python -m icp.launch --executor slurm --timeout-min 720 [--partition P] [--account A] [--gpus 1] [--cpus 8]
        [--mem-mb 32000] [--max-requeues 3] [--signal-delay-s 90] -- <icp train arguments>

The ``icp train`` arguments (``--config RECIPE --set ... --out RUN_DIR --run-id ID``, from
:meth:`icp.grid.Run.train_args`) go to :class:`TrainJob`, which runs the engine inside the job. ``--executor`` is
submitit's: ``slurm`` (a SLURM job), ``local`` (a subprocess on this machine) or ``debug`` (in this process).

This process stays light while it waits (no torch import; it polls the job's state and result file), so a
profile can keep hundreds of runs in flight. The job is submitted inside ``submitit.helpers.clean_env()`` (no
SLURM variables of an enclosing allocation leak into it) with an explicit ``timeout_min``; its logs go to
``RUN_DIR/submitit/``. :class:`TrainJob` is checkpointable: when SLURM signals a time-out or a preemption, submitit
calls :meth:`TrainJob.checkpoint`, which marks the record ``requeued``, and requeues the job, which resumes from
``last.pt``. Exit status: 0 when the record is ``complete`` or ``diverged`` (a final result that aggregation
reports), else 1 with one line naming the run and the error text. Ctrl-C or SIGTERM cancels the job, waits for it
to end (:data:`STOP_WAIT_S` at most) and sets its record aside, so that running the workflow again resumes the run.

One exception to exit 1: a tuning trial (a ``+trial=<i>`` run of :mod:`icp.tuning`) that the training itself ended
with an error of its own (:func:`lost_trial`) is a trial that lost, kept as final with exit 0 and a warning, so that
the selection runs and counts it lost rather than the workflow stopping at it.
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import submitit

from icp import faults, pack, records

FINAL_OK = pack.FINAL


class TrainJob(submitit.helpers.Checkpointable):
    """The submitted callable: ``icp train`` of one run, resumable from its ``last.pt``."""

    def __init__(self, train_args: Sequence[str], workdir: str, executor: str, lock_wait_s: float = 300.0,
                 cpus: int = 0):
        self.train_args = list(train_args)
        self.workdir = workdir
        self.executor = executor
        self.lock_wait_s = lock_wait_s  # a requeued job may start while the old one is still being killed
        self.cpus = cpus  # CPU threads of torch (0 = its default); jobs on one machine must not oversubscribe it
        self._trainer = None

    def __call__(self) -> dict:
        os.chdir(self.workdir)  # recipes, data and run directories are relative to the repository
        import torch

        from icp import cli, config, engine, records

        if self.cpus > 0:
            torch.set_num_threads(self.cpus)

        args = cli.parser().parse_args(["train", *self.train_args])
        cfg = config.load(args.config, args.set)
        try:
            job_id: Optional[str] = str(submitit.JobEnvironment().job_id)
        except RuntimeError:  # the debug executor runs outside any job environment
            job_id = None
        self._trainer = engine.Trainer(cfg, args.out, run_id=args.run_id,
                                       job=records.job_info(job_id, self.executor))
        record = self._trainer.run(lock_wait_s=self.lock_wait_s)
        return {record["run_id"]: {"status": record["status"], "error": record["error"]}}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit inside the job on a time-out or preemption, just before it requeues the job."""
        if self._trainer is not None:
            self._trainer.stop_status = "requeued"  # recorded when submitit's exit unwinds the training loop
        return submitit.helpers.DelayedSubmission(TrainJob(self.train_args, self.workdir, self.executor,
                                                           self.lock_wait_s, self.cpus))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_trainer": None}


def train_option(train_args: Sequence[str], name: str) -> Optional[str]:
    """The value of ``icp train``'s option ``name`` (``--out``, ``--run-id``, ``--config``) in ``train_args``, given
    as ``NAME VALUE`` or ``NAME=VALUE``; None where it is absent. The launcher and the executor read a run's directory
    and id from it."""
    for i, arg in enumerate(train_args):
        if arg == name and i + 1 < len(train_args):
            return train_args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def error_line(text: str) -> str:
    """The ``Type: message`` line of the job's traceback (submitit's error text ends with a log path); "" where the
    text has none. The launcher and the executor name a failed job by it."""
    import re

    found = [ln.strip() for ln in text.splitlines() if re.match(r"^\s*[\w.]*(Error|Exception|Interrupt)\b", ln)]
    return found[-1] if found else ""


# the profile's resources of the train rule -> the launcher's options (its flags: --timeout-min etc.); the Snakefile
# passes them to icp.launch, and --executor submitit (icp.executor) reads them from the job
RESOURCES = {"submitit_executor": "executor", "runtime": "timeout_min", "slurm_partition": "partition",
             "slurm_account": "account", "gpus": "gpus", "cpus_per_task": "cpus", "mem_mb": "mem_mb",
             "max_requeues": "max_requeues", "signal_delay_s": "signal_delay_s", "poll_s": "poll_s",
             "runs_per_gpu": "runs_per_gpu"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m icp.launch", description=__doc__.splitlines()[0])
    p.add_argument("--executor", choices=["slurm", "local", "debug"], default="local")
    p.add_argument("--timeout-min", type=int, required=True, help="job time limit in minutes (always explicit)")
    p.add_argument("--partition", default="", help="SLURM partition ('' = the cluster's default)")
    p.add_argument("--account", default="", help="SLURM account ('' = the user's default)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per job")
    p.add_argument("--cpus", type=int, default=1, help="CPUs per job")
    p.add_argument("--mem-mb", type=int, default=0, help="memory per job in MB (0 = the cluster's default)")
    p.add_argument("--max-requeues", type=int, default=3, help="requeues after time-outs before giving up")
    p.add_argument("--signal-delay-s", type=int, default=90,
                   help="SLURM warns the job this many seconds before its time limit (submitit then requeues it)")
    p.add_argument("--poll-s", type=float, default=10.0, help="seconds between checks of the job's state")
    p.add_argument("--runs-per-gpu", type=int, default=1,
                   help="pack this many runs into one job (each its own process, record and last.pt)")
    p.add_argument("--pack-dir", default="", help="where the launchers of a sweep meet to form packs "
                   "(needed with --runs-per-gpu > 1; the Snakefile passes <runs_dir>/.packs)")
    p.add_argument("--pack-wait-s", type=float, default=10.0,
                   help="how long a queued run waits for others before it goes in a smaller pack")
    p.add_argument("--log-dir", default="", help="where the job's submitit logs go (DIR/submitit; default: "
                   "$ICP_LOGS_DIR/<run id>, which the workflow sets from the grid's logs_dir, else RUN_DIR)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- followed by the icp train arguments")
    return p


def make_executor(args, folder: Path, name: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor, slurm_max_num_timeout=args.max_requeues)
    params = {"timeout_min": args.timeout_min, "name": name, "cpus_per_task": args.cpus, "tasks_per_node": 1,
              "nodes": 1}
    if args.mem_mb:
        params["mem_gb"] = args.mem_mb / 1024
    if args.gpus:
        params["gpus_per_node"] = args.gpus
    if args.executor == "slurm":
        params["slurm_signal_delay_s"] = args.signal_delay_s
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.account:
            params["slurm_account"] = args.account
    executor.update_parameters(**params)
    return executor


def _submit_pack(args, run: dict) -> tuple[object, Path]:
    """Meet the other launchers (icp.pack): submit the pack when this launcher forms it, else find its job."""
    meeting = pack.Meeting(args.pack_dir)
    folder, members = meeting.meet(run, args.runs_per_gpu, args.pack_wait_s)
    job_file = folder / "job.json"
    if members:
        executor = make_executor(args, folder / "submitit", f"icp:pack-of-{len(members)}")
        with submitit.helpers.clean_env():
            job = submit_retrying(lambda: executor.submit(pack.PackJob(members, os.getcwd(), args.executor,
                                                                       args.cpus)), f"pack {folder.name}")
        pack.write_json({"job_id": job.job_id, "executor": args.executor,
                         "runs": [m["run_id"] for m in members]}, job_file)
        return job, folder
    deadline = time.monotonic() + 600
    while not job_file.exists():  # the launcher that formed the pack is submitting it
        if time.monotonic() > deadline:
            raise RuntimeError(f"no job was submitted for pack {folder} within 600 s")
        time.sleep(0.5)
    info = pack.read_json(job_file)
    cls = submitit.SlurmJob if info["executor"] == "slurm" else submitit.LocalJob
    return cls(folder / "submitit", info["job_id"]), folder


def _state(job, executor: str) -> str:
    """The job's scheduler state, asked directly each poll (submitit's own watcher caches ``sacct`` for up to a
    minute): SLURM's (``squeue`` while queued, then ``sacct``: :func:`icp.faults.slurm_states`), else RUNNING until
    submitit's local job is done. Accounting reports a job that submitit requeued as ended (CANCELLED) while its next
    attempt waits in the queue: only a job that has left the queue is over."""
    if executor == "slurm":
        return faults.slurm_states([job.job_id])[str(job.job_id)]
    return "COMPLETED" if job.done() else "RUNNING"


def watch_requeue(memo: dict, run_dir: str | Path, job_id: str, state: str) -> bool:
    """Follow one run's job from poll to poll (``memo``: this run's own dict) and, when SLURM has put a job that ran
    back in the queue, say ``requeued`` in its record (:func:`icp.records.mark_requeued`) once per requeue. A job
    seen only queued is looked at once (it may have run between two polls). Returns whether it marked the record."""
    if state in faults.ACTIVE - set(records.REQUEUED_STATES):
        memo["ran"], memo["marked"] = True, False
        return False
    if state not in records.REQUEUED_STATES or memo.get("marked") or (memo.get("looked") and not memo.get("ran")):
        return False
    memo["looked"], memo["marked"] = True, True
    return records.mark_requeued(run_dir, job_id)


# SUBMIT_RETRY_S: how long a submission that the controller does not answer is retried (faults.retry_delays)
SUBMIT_RETRY_S = 600.0


def submit_retrying(submit, what: str, total_s: float = SUBMIT_RETRY_S, log=None, first_s: float = 5.0):
    """``submit()`` (an ``executor.submit``), retried with growing waits while the controller does not answer
    (:func:`icp.faults.unreachable`: slurmctld down, restarting or busy), a line per retry; any other refusal, or
    the last one, is raised."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    delays = faults.retry_delays(total_s, first_s)
    for attempt in range(len(delays) + 1):
        try:
            return submit()
        except Exception as exc:
            if attempt == len(delays) or not faults.unreachable(exc):
                raise
            log(f"{what}: sbatch: the controller does not answer ({error_line(str(exc)) or str(exc).strip()[:200]});"
                f" retry {attempt + 1} of {len(delays)} in {delays[attempt]:.3g} s")
            time.sleep(delays[attempt])


# how long a launcher stopped by a signal waits for its cancelled job to end before it exits
STOP_WAIT_S = 300.0


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGINT reached the launcher (a KeyboardInterrupt: a debug job training in this process records
    ``interrupted``)."""


def _wait_ended(job, executor: str, wait_s: float, run_dir: Optional[Path] = None) -> None:
    """Wait for a cancelled job to end, so that its last write of the record (``interrupted``) comes before the
    launcher exits and sets the record aside: Snakemake removes a failed job's output once the launcher has exited,
    and a record.json the training wrote after that would count as the run's output next time (an interrupted run
    taken for finished, never resumed). Ended means: the scheduler no longer runs the job (or cannot say) and no
    trainer holds the run's lock (:func:`icp.runlock.busy`: the trainer's process has exited, its record written).
    ``wait_s`` bounds a scheduler that never lets go of a job."""
    from icp import runlock

    deadline = time.monotonic() + wait_s
    while executor != "debug" and time.monotonic() < deadline:
        try:
            ended = _state(job, executor) not in faults.ACTIVE
        except Exception:  # the scheduler cannot say: the trainer's lock still can
            ended = True
        if ended and (run_dir is None or not runlock.busy(run_dir)):
            return
        time.sleep(0.2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    out = train_option(train_args, "--out")
    if out is None:
        print("icp.launch: error: the icp train arguments need --out RUN_DIR", file=sys.stderr)
        return 2
    packed = args.runs_per_gpu > 1
    if packed and (not args.pack_dir or args.executor == "debug"):
        print("icp.launch: error: --runs-per-gpu > 1 needs --pack-dir and the slurm or local executor",
              file=sys.stderr)
        return 2
    run_dir = Path(out)
    run_id = train_option(train_args, "--run-id") or out
    logs = args.log_dir or (f"{os.environ['ICP_LOGS_DIR']}/{run_id}" if os.environ.get("ICP_LOGS_DIR") else "")
    folder = Path(logs or run_dir) / "submitit"  # the workflow's logs_dir (ICP_LOGS_DIR), else the run directory
    folder.mkdir(parents=True, exist_ok=True)
    own_job = not packed
    if packed:
        job, pack_folder = _submit_pack(args, {"run_id": run_id, "run_dir": out, "train_args": train_args})
        own_job = pack.read_json(pack_folder / "job.json").get("runs", [None])[0] == run_id
        folder = pack_folder / "submitit"
        what = f"pack {pack_folder.name} ({'submitted' if own_job else 'joined'})"
    else:
        executor = make_executor(args, folder, f"icp:{run_id}")
        with submitit.helpers.clean_env():
            job = submit_retrying(lambda: executor.submit(TrainJob(train_args, os.getcwd(), args.executor,
                                                                   cpus=args.cpus)), run_id)
        what = "submitted"
    print(f"{run_id}: {what} {args.executor} job {job.job_id}; logs in {folder}", file=sys.stderr, flush=True)

    stopping: list = []

    def cancel(signum, frame):
        # the job is stopped outside the handler (main's except below): the handler may have interrupted the loop
        # inside the job's poll, whose lock a poll from here could not take
        if not stopping:  # a second signal (Snakemake's, after the one to the process group) while the job stops
            stopping.append(signum)
            raise Signalled(signum)

    state = "RUNNING"
    try:
        signal.signal(signal.SIGTERM, cancel)
        signal.signal(signal.SIGINT, cancel)
        # the result file ends the wait at once; else the job's state, asked every poll: a job that ended without
        # a result (cancelled, out of memory, node lost) is noticed within one poll. A LocalJob rebuilt from its id
        # (a joined pack) knows nothing but its result file
        check_state = own_job or args.executor == "slurm"
        memo: dict = {}
        while args.executor != "debug" and not job.paths.result_pickle.exists():
            try:
                state = _state(job, args.executor) if check_state else "RUNNING"
            except faults.Unreachable as exc:  # nothing is known: the job is not taken for gone
                if not memo.get("unreachable"):
                    print(f"{run_id}: {exc}; waiting", file=sys.stderr, flush=True)
                memo["unreachable"], state = True, "RUNNING"
                time.sleep(args.poll_s)
                continue
            memo["unreachable"] = False
            if state not in faults.ACTIVE:
                break
            if args.executor == "slurm" and watch_requeue(memo, run_dir, job.job_id, state):
                print(f"{run_id}: job {job.job_id} requeued ({state}); its record says requeued until it restarts",
                      file=sys.stderr, flush=True)
            time.sleep(args.poll_s)
        result = job.result()[run_id]
    except Signalled as sig:
        if own_job:  # a pack's job is cancelled by the launcher that submitted it
            job.cancel(check=False)
            _wait_ended(job, args.executor, STOP_WAIT_S, run_dir)
        found = records.load(run_dir)
        if found.path.name == records.NAME and (found.record or {}).get("status") in FINAL_OK:
            # the run ended before the stop reached it (a signal while the launcher slept between polls): a success,
            # so that Snakemake, which lets its running jobs finish on SIGTERM, keeps the record instead of removing
            # the output of a failed job and training the run again
            print(f"{run_id}: {found.record['status']} before the stop ({signal.Signals(sig.args[0]).name}; job "
                  f"{job.job_id})", file=sys.stderr, flush=True)
            return 0
        if own_job:
            records.set_aside(run_dir)
        print(f"{run_id}: {'cancelled' if own_job else 'left'} job {job.job_id} "
              f"({signal.Signals(sig.args[0]).name})", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # the job raised, or was killed without a result
        return _stopped(run_id, run_dir, job, folder, state, error_line(str(exc)) or repr(exc), args.max_requeues,
                        train_args, args.executor)
    if result["status"] not in FINAL_OK:
        return _stopped(run_id, run_dir, job, folder, state, result["error"] or result["status"], args.max_requeues,
                        train_args, args.executor)
    if result["status"] == "diverged":
        print(f"icp.launch: warning: {run_id} diverged: {result['error']}", file=sys.stderr)
    print(f"{run_id}: {result['status']} (job {job.job_id})", file=sys.stderr)
    return 0


# errors of the machine, the scheduler or the run's files rather than of a trial's settings: a tuning trial that
# stops on one is not lost but resumes when the workflow runs again, as any run. By type name (the record's error is
# ``Type: message``): the OSError family (a full disk, a missing or unreadable file, a lost connection), memory,
# signals, torch's CUDA out-of-memory and accelerator errors, and the project's data, checkpoint and lock errors
ENVIRONMENTAL = frozenset(
    name for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, (OSError, MemoryError, KeyboardInterrupt, SystemExit))
) | {"OutOfMemoryError", "AcceleratorError", "DataError", "CheckpointError", "RunBusy"}
# the same causes where a RuntimeError's text is all that names them (older torch, DataLoader workers)
_ENVIRONMENTAL_TEXT = re.compile(r"CUDA out of memory|CUDA error|CUBLAS_STATUS|cuDNN error|NCCL|"
                                 r"No space left on device|DataLoader worker \(pid")


def trial_of(run_id: str) -> Optional[int]:
    """The trial number of a tuning trial's run id (``.../<method>+trial=<i>/s<seed>``: the ``trial`` factor of its
    method segment, :func:`icp.naming.variant_of_id`), else None."""
    from icp.naming import variant_of_id

    found = re.search(r"\+trial=(\d+)(?=\+|$)", variant_of_id(run_id) or "")
    return int(found.group(1)) if found else None


def lost_trial(run_id: str, run_dir: str | Path, job_id: Optional[str] = None, state: str = "") -> Optional[str]:
    """The error of a tuning trial that lost, or None for a run whose stop is a fault to resume.

    Equal tuning's rule (:data:`icp.tuning.RULE`): a diverged or failed trial counts as a trial that lost, never
    silently dropped and never drawn again. A diverged trial is final already; a trial whose training raised is lost
    when its own ``record.json`` (written by the engine's exception handler, of this job where the record names its
    job) says ``failed`` with an error that is not :data:`ENVIRONMENTAL` and the scheduler did not end the job
    (:data:`icp.faults.SCHEDULER`). Its record is then kept as final, and its job counts as a success, so that the
    tuned cell's selection runs and marks the trial lost. Everything else stays a failed job whose record is set
    aside and resumed: a run that is no trial, a stop recorded as cancelled, requeued or interrupted, a full disk, an
    out-of-memory error, a set-up error before training started (no failed record)."""
    if trial_of(run_id) is None or state in faults.SCHEDULER:
        return None
    found = records.load(run_dir)
    record = found.record
    if record is None or found.path.name != records.NAME:
        return None  # no record, or only one set aside (record.stopped.json): nothing this job's training wrote
    if record.get("status") != "failed" or record.get("run_id") not in (None, run_id):
        return None
    jobs = record.get("jobs") or [{}]
    recorded = jobs[-1].get("job_id")
    if job_id is not None and recorded is not None and str(recorded) != str(job_id):
        return None  # an earlier job's record: this job stopped before its training wrote one
    error = str(record.get("error") or "")
    name = re.match(r"([A-Za-z_][\w.]*)(?::|$)", error)
    if name is None or name.group(1).rsplit(".", 1)[-1] in ENVIRONMENTAL or _ENVIRONMENTAL_TEXT.search(error):
        return None
    return error


def _config_digest(train_args: Sequence[str]) -> Optional[str]:
    """The digest of the config that ``icp train train_args`` would run (``--config`` and every ``--set``), or None
    where it cannot be resolved here."""
    sets = [v for i, a in enumerate(train_args) if a == "--set" and i + 1 < len(train_args)
            for v in [train_args[i + 1]]]
    try:
        from icp import config

        return config.load(train_option(train_args, "--config"), sets).digest()
    except Exception:
        return None


def record_stop(run_dir: Path, job, folder: Path, state: str, fallback: str, requeues: int,
                run_id: Optional[str] = None, train_args: Sequence[str] = (), executor: str = "") -> str:
    """A run whose job ended without a final record: the one line naming the cause (:func:`icp.faults.describe`),
    written into its record (``status`` failed unless the run said otherwise, ``error`` the cause), and the record
    set aside (:func:`icp.records.set_aside`) so that running the workflow again resumes the run. A job that ended
    before its training wrote any record (no data on the node, a set-up error) leaves a record that says so, set
    aside as well: ``icp status`` calls the run failed with the cause, never not started."""
    record = records.load(run_dir).record
    logs = sorted(Path(folder).glob(f"{job.job_id}_*")) + sorted((run_dir / "submitit").glob(f"{job.job_id}_*"))
    # the requeues its jobs actually used (each attempt is one entry of the record's jobs), not the allowance
    used = max(0, len(record.get("jobs") or []) - 1) if record else requeues
    cause = faults.describe(state, record or {"error": fallback}, logs, used if state == "TIMEOUT" else None)
    if record is None and run_id is not None:
        stub = records.stopped_before_training(run_id, _config_digest(train_args), cause,
                                               {"job_id": str(job.job_id), "executor": executor or None})
        with contextlib.suppress(OSError):
            records.write(stub, run_dir / records.STOPPED)
    elif record is not None and record.get("status") not in FINAL_OK:
        if record["status"] in ("running", "requeued"):  # nothing is in flight any more
            record["status"] = "failed"
        record["error"] = cause
        with contextlib.suppress(OSError):  # a full disk may refuse even this; the line still names it
            records.write(record, run_dir / records.NAME)
        records.set_aside(run_dir)
    return cause


def _stopped(run_id: str, run_dir: Path, job, folder: Path, state: str, fallback: str, requeues: int,
             train_args: Sequence[str] = (), executor: str = "") -> int:
    lost = lost_trial(run_id, run_dir, job.job_id, state)
    if lost is not None:  # kept as final: the selection counts it lost (icp.tuning.RULE)
        print(f"icp.launch: warning: {run_id}: tuning trial lost: {lost}", file=sys.stderr)
        print(f"{run_id}: failed, a lost trial (job {job.job_id})", file=sys.stderr)
        return 0
    cause = record_stop(run_dir, job, folder, state, fallback, requeues, run_id, train_args, executor)
    print(f"icp.launch: error: {run_id}: {cause} (job {job.job_id}; log {folder})", file=sys.stderr)
    return 1


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m icp.launch``: :func:`main`, with an output that cannot be written (read-only runs directory, no
    permission, full disk) told in one line instead of a traceback."""
    from icp.cli import unwritable

    try:
        return main(argv)
    except Exception as exc:
        if (line := unwritable(exc)) is None:
            raise
        print(f"icp.launch: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
