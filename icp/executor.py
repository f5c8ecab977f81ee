"""Snakemake's ``--executor submitit``: the sweep's training jobs submitted through submitit from the Snakemake
process itself, and watched with one batched scheduler query per poll.

``snakemake --profile slurm all`` loads this (through the small ``snakemake-executor-plugin-submitit`` package in
``workflow/executor/``, which ``tools/bootstrap.sh`` installs: Snakemake finds executor plugins only among
installed, non-editable packages). The login node then holds one process whatever the number of runs in flight:

* ``run_job``: a ``train`` job becomes :class:`icp.launch.TrainJob` (or, with the ``runs_per_gpu`` resource above 1,
  one :class:`icp.pack.PackJob` for that many ready runs of the same resources), submitted with submitit inside
  ``clean_env()``: its Checkpointable requeue on SLURM's time-limit or preemption warning is kept. The cluster
  options come from the rule's resources (:data:`icp.launch.RESOURCES`, set in the profile).
* ``check_active_jobs`` (every ``seconds-between-status-checks``): one ``squeue`` for every job in flight, and one
  ``sacct`` for those that left the queue (:func:`icp.faults.slurm_states`); a job with a result file is read, one
  that ended without (cancelled, out of memory, node failure, time limit with its requeues used up) is reported
  within that poll in one line naming the cause (:func:`icp.faults.describe`), which its record keeps; the record
  is set aside (:func:`icp.records.set_aside`) so that running the same command again resumes the run. A tuning
  trial that its training ended with an error of its own is the exception (:func:`icp.launch.lost_trial`): a lost
  trial, kept, its job a success.
* A controller that does not answer (slurmctld down or restarting) loses nothing: an ``sbatch`` it refuses for
  that reason (:func:`icp.faults.unreachable`) is retried from the status checks with growing waits
  (:func:`icp.faults.retry_delays`, ``submit_retry_s`` in all), a line per retry, and the runs submitted meanwhile
  wait in the same queue instead of each blocking on its own ``sbatch``; a status check it does not answer
  (:class:`icp.faults.Unreachable`) keeps every job in flight. A job that SLURM puts back in the queue after it ran
  (requeue, preemption, node failure) has its runs' records say ``requeued`` until it restarts
  (:func:`icp.launch.watch_requeue`).
* Runs are packed here, in the process that sees every ready job, rather than with Snakemake's ``group``: a group
  fuses dependent runs (an AI-KD student and its teacher) into one sequential job, and ``--group-components`` is
  counted per group id.

Nothing here imports torch.
"""
import contextlib
import os
import shutil
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import AsyncGenerator, Optional

import submitit
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from icp import faults, launch, pack, preflight, records


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    pack_wait_s: float = field(default=10.0, metadata={
        "help": "with runs_per_gpu > 1: how long a ready run waits for others before it goes in a smaller pack"})
    submit_retry_s: float = field(default=launch.SUBMIT_RETRY_S, metadata={
        "help": "how long an sbatch that the controller does not answer is retried before its runs fail"})


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)


def _options(job: JobExecutorInterface) -> SimpleNamespace:
    """The launcher's options (:func:`icp.launch.parser`'s defaults) overridden by the job's resources."""
    opts = vars(launch.parser().parse_args(["--timeout-min", "0"]))
    for resource, option in launch.RESOURCES.items():
        value = job.resources.get(resource) if hasattr(job.resources, "get") else getattr(job.resources, resource, None)
        if value is not None and str(value) != "":
            opts[option] = type(opts[option])(value) if opts[option] is not None else value
    return SimpleNamespace(**opts)


def _run(job: JobExecutorInterface) -> dict:
    """A train job's run: id, directory and ``icp train`` arguments (the rule's ``params.train``)."""
    args = shlex.split(job.format_wildcards("{params.train}"))
    out = launch.train_option(args, "--out")
    return {"run_id": launch.train_option(args, "--run-id") or out, "run_dir": out, "train_args": args}


class Executor(RemoteExecutor):
    def __post_init__(self):
        self.waiting: list[tuple[float, SubmittedJobInfo]] = []  # ready runs not yet in a pack
        # submissions the controller did not answer, oldest first: [infos, retries so far, first refusal, next try]
        self.retrying: list[list] = []
        self.unreachable = False  # the last status check found no controller

    # ---------------------------------------------------------------------------------------------- submit
    def run_job(self, job: JobExecutorInterface):
        if job.is_group() or job.name != "train":
            raise ValueError(f"--executor submitit runs the train rule only, not {job.name} (mark it localrule)")
        info = SubmittedJobInfo(job, aux={"runs": [_run(job)], "opts": _options(job)})
        self.report_job_submission(info)
        if info.aux["opts"].executor == "slurm" and shutil.which("sbatch") is None:  # one line, nothing written
            said, self.no_slurm = getattr(self, "no_slurm", False), True
            self.report_job_error(info, msg=None if said else f"icp: error: {preflight.NO_SLURM}\n")
            return
        if info.aux["opts"].runs_per_gpu > 1:
            self.waiting.append((time.monotonic(), info))
            self._submit_packs(force=False)
        else:
            self._submit([info])

    def _submit(self, infos: list[SubmittedJobInfo], retry: Optional[list] = None) -> None:
        opts = infos[0].aux["opts"]
        runs = [r for i in infos for r in i.aux["runs"]]
        folder = Path(runs[0]["run_dir"]) / "submitit"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"icp:{runs[0]['run_id']}" if len(runs) == 1 else f"icp:pack-of-{len(runs)}"
        if self.retrying and retry is None:  # the controller did not answer a moment ago: wait in line
            self.retrying.append([infos, 0, time.monotonic(), self.retrying[0][3]])
            return
        executor = launch.make_executor(opts, folder, name)
        callable_ = (launch.TrainJob(runs[0]["train_args"], os.getcwd(), opts.executor, cpus=opts.cpus)
                     if opts.runs_per_gpu <= 1 else pack.PackJob(runs, os.getcwd(), opts.executor, opts.cpus))
        try:
            with submitit.helpers.clean_env():
                sjob = executor.submit(callable_)
        except Exception as exc:  # sbatch refused it: retried while the controller does not answer, else said
            text = launch.error_line(str(exc)) or " ".join(str(exc).split())[:300]
            tries, first = (retry or [infos, 0, time.monotonic()])[1:3]
            delays = faults.retry_delays(getattr(self.workflow.executor_settings, "submit_retry_s",
                                                 launch.SUBMIT_RETRY_S))
            if faults.unreachable(exc) and tries < len(delays):
                what = ", ".join(r["run_id"] for r in runs)
                self.logger.warning(f"{what}: sbatch: the controller does not answer ({text}); retry {tries + 1} "
                                    f"of {len(delays)} in {delays[tries]:.0f} s")
                self.retrying.insert(0, [infos, tries + 1, first, time.monotonic() + delays[tries]])
                return
            waited = f" after {tries} retries over {time.monotonic() - first:.0f} s" if tries else ""
            for info in infos:
                self.report_job_error(info, msg=f"icp: error: {info.aux['runs'][0]['run_id']}: not submitted"
                                                f"{waited}: {text}\n")
            return
        for info in infos:
            info.external_jobid = str(sjob.job_id)
            info.aux["job"] = sjob
            info.aux["folder"] = folder
        self.logger.info(f"{', '.join(r['run_id'] for r in runs)}: submitted {opts.executor} job {sjob.job_id}; "
                         f"logs in {folder}")

    def _submit_packs(self, force: bool) -> None:
        """Submit the waiting runs in packs of ``runs_per_gpu`` (runs of the same options only); with ``force``, also
        the smaller packs of runs that have waited ``pack_wait_s``."""
        wait_s = getattr(self.workflow.executor_settings, "pack_wait_s", 10.0)
        by_opts: dict[str, list[tuple[float, SubmittedJobInfo]]] = {}
        for item in self.waiting:
            by_opts.setdefault(repr(sorted(vars(item[1].aux["opts"]).items())), []).append(item)
        self.waiting = []
        now = time.monotonic()
        for items in by_opts.values():
            k = items[0][1].aux["opts"].runs_per_gpu
            while len(items) >= k or (items and force and now - items[0][0] >= wait_s):
                chunk, items = items[:k], items[k:]
                self._submit([info for _, info in chunk])
            self.waiting += items

    def _retry_submissions(self) -> None:
        """Submit again, oldest first, what the controller did not answer once its wait is over; the first that it
        still does not answer puts the others back in line behind it."""
        while self.retrying and self.retrying[0][3] <= time.monotonic():
            item = self.retrying.pop(0)
            pending = len(self.retrying)
            self._submit(item[0], retry=item)
            if len(self.retrying) > pending:  # refused again: it went back first, the rest wait their turn
                break
            if item[1]:
                self.logger.info(f"{', '.join(r['run_id'] for i in item[0] for r in i.aux['runs'])}: submitted "
                                 f"after {item[1]} retries ({time.monotonic() - item[2]:.0f} s)")

    # ---------------------------------------------------------------------------------------------- watch
    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        self._retry_submissions()
        self._submit_packs(force=True)
        submitted = [j for j in active_jobs if "job" in j.aux]
        slurm = sorted({j.external_jobid for j in submitted if j.aux["opts"].executor == "slurm"})
        states: Optional[dict[str, str]] = {}
        if slurm:
            async with self.status_rate_limiter:
                try:
                    states = faults.slurm_states(slurm)  # one squeue (+ one sacct) for the whole sweep
                except faults.Unreachable as exc:  # nothing is known: no job is taken for gone
                    if not self.unreachable:
                        self.logger.warning(f"icp: {exc}; {len(slurm)} jobs are kept in flight until it answers")
                    states = None
            self.unreachable = states is None
        for info in active_jobs:
            if "job" not in info.aux:  # waiting for its pack, or for the controller to take its submission
                yield info
                continue
            if states is None and info.aux["opts"].executor == "slurm":
                yield info
                continue
            sjob = info.aux["job"]
            if sjob.paths.result_pickle.exists():
                self._finish(info, "COMPLETED")
                continue
            if info.aux["opts"].executor == "slurm":
                state = states.get(info.external_jobid, faults.UNKNOWN)
                if state == faults.UNKNOWN and time.monotonic() - info.aux.setdefault("unknown_since", time.monotonic()) < 60:
                    yield info  # accounting may lag a job that just left the queue
                    continue
            else:
                state = "COMPLETED" if sjob.done() else "RUNNING"
            if state in faults.ACTIVE:
                if info.aux["opts"].executor == "slurm" and launch.watch_requeue(
                        info.aux.setdefault("requeue", {}), info.aux["runs"][0]["run_dir"], sjob.job_id, state):
                    self.logger.info(f"{info.aux['runs'][0]['run_id']}: job {sjob.job_id} requeued ({state}); its "
                                     "record says requeued until it restarts")
                yield info
            else:
                self._finish(info, state)

    def _finish(self, info: SubmittedJobInfo, state: str) -> None:
        """The job is over: success when its run's record is final or it is a tuning trial that lost
        (:func:`icp.launch.lost_trial`: a failed trial counts as lost, the selection must see it), else one line
        naming the cause."""
        run = info.aux["runs"][0]
        sjob = info.aux["job"]
        result: dict = {}
        if sjob.paths.result_pickle.exists():
            try:
                result = sjob.result().get(run["run_id"]) or {}
            except Exception as exc:  # the job raised: its text names the error
                result = {"status": "failed", "error": launch.error_line(str(exc)) or repr(exc)}
        if result.get("status") in pack.FINAL:
            if result["status"] == "diverged":
                self.logger.warning(f"{run['run_id']} diverged: {result['error']}")
            self.report_job_success(info)
            return
        lost = launch.lost_trial(run["run_id"], run["run_dir"], sjob.job_id, state)
        if lost is not None:  # a tuning trial that lost: its record is final, the selection counts it lost
            self.logger.warning(f"icp.launch: warning: {run['run_id']}: tuning trial lost: {lost}")
            self.report_job_success(info)
            return
        cause = launch.record_stop(Path(run["run_dir"]), sjob, info.aux["folder"], state,
                                   result.get("error") or result.get("status") or "",
                                   info.aux["opts"].max_requeues, run["run_id"], run["train_args"],
                                   info.aux["opts"].executor)
        line = f"icp: error: {run['run_id']}: {cause} (job {sjob.job_id}; log {info.aux['folder']})"
        for log in info.job.log:  # the rule's log, which show-failed-logs prints
            with contextlib.suppress(OSError):
                Path(log).write_text(line + "\n")
        self.report_job_error(info, msg=line + "\n")

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]):
        slurm = [j.external_jobid for j in active_jobs if "job" in j.aux and j.aux["opts"].executor == "slurm"]
        if slurm:
            subprocess.run(["scancel", *slurm], capture_output=True, timeout=60)
        for info in active_jobs:
            if "job" in info.aux and info.aux["opts"].executor != "slurm":
                info.aux["job"].cancel(check=False)
