"""The run record: ``record.json`` in every run directory, the one contract that aggregation reads.

Written atomically at the start of a run, after every epoch, and at the end. Schema (version
``SCHEMA_VERSION``); metric blocks hold the keys of :data:`icp.metrics.HIGHER_IS_BETTER`
(top1, macro_f1, precision, recall, nll, ece; fractions except nll)::

    schema          int, SCHEMA_VERSION
    run_id          the grid's run id (``icp.grid``: "<dataset>/<model>/<scenario>/<method>[+opt=value...]/s<seed>")
                    when launched from the grid, else "<method>-<model>-<dataset>-<scenario tag>-s<seed>-<digest>"
    status          "running"      training (or its process was killed without a word: see jobs)
                    "complete"     all epochs done
                    "diverged"     the training loss became NaN/inf; error names the epoch and step. Final: the
                                   run is not trained again, and aggregation reports it and never averages it in
                    "failed"       an exception ended it; error holds its text. Training it again resumes it
                    "interrupted"  stopped by Ctrl-C or a termination signal; training it again resumes it
                    "requeued"     its scheduler job timed out or was preempted and submitit requeued it: the next
                                   job resumes it from last.pt
    error           null, or "ExceptionType: message" (diverged: "loss is nan at epoch E, step S of N")
    jobs            one entry per process that trained the run (a resumed or requeued run has several):
                    {"job_id": scheduler job id or null, "executor": "slurm" | "local" | "debug" | null,
                     "hostname", "started_at", "seconds": wall seconds this attempt spent on the run (set-up,
                     training, evaluation; kept when the attempt fails, is interrupted or requeued, so the work it
                     lost counts), "shared_by": runs that shared its device (a pack's job; else 1)}
    notes           (only when there is one) what a resume had to work around, one dated line each: "last.pt is
                    unreadable (...); resumed from last.prev.pt (epoch E)"
    method          method name (config method.name); method_options: resolved options
    model           model name; model_params: number of parameters of the evaluated classifier
    dataset         dataset name
    scenario        {"kind", "noise_type", "noise_rate", "noise_rate_measured", "noisy_count", "shots",
                     "train_size", "val_size", "test_size", "pool_size", "seed", "class_counts", "data_source"
                     (the folder the dataset was read from: Fashion-MNIST falls back from data.root to Debian's
                     copy), a noise scenario's "val_noise_rate_measured" and "val_noisy_count" (its validation
                     labels' noise), a few-shot scenario's "val_shots" (validation images per class), ...}
    seed            training seed (train.seed)
    config          the full resolved config (every key, defaults included); config_digest: its hash
    code            {"version": package version, "git_commit": sha or null, "git_dirty": bool or null (a tracked file
                     other than the pipeline's outputs, results/, figures/ and dvc.lock, differs from the commit);
                     where ICP_GIT_COMMIT is set (a copy of the code, e.g. on a lent machine) that sha, dirty null}
    env             {"python", "torch", "torchvision", "cuda", "cudnn", "device", "device_name" (the GPU model, else
                     the CPU model), "cpu" (CPU model), "cpu_threads" (torch's intra-op threads), "cpu_capability"
                     (the vector instructions torch's CPU kernels use: float results differ between them),
                     "gpu_driver", "hostname", "platform"}
    epochs          list, one entry per completed epoch:
                    {"epoch": 1-based, "lr": lr at the epoch's end, "time_s": training seconds, "images":
                     training samples of the epoch (CS-KD: anchors; its pair images are extra work per sample),
                     "images_per_s": images / time_s, "train": {"loss", "acc", <each named loss>},
                     "diagnostics": null, or the method's per-sample epoch means (ICP: "alpha" (alpha_e),
                     "input_shift" (mean |x_K - x| in normalised input units), "feature_mse.<layer>" (unweighted
                     MSE between the clean and the refined input's features)),
                     "test": metrics, "val": metrics or null; both null on the epochs that train.eval_every skips;
                     "val" is scored on the validation labels of the setting (a noise scenario's are noised like its
                     training labels, icp.data): every choice (best epoch, tuning) reads it. A noise scenario's
                     epochs also carry "val_clean": the same images on their clean labels, an oracle metric that no
                     choice reads (absent in other scenarios)}
    last            {"epoch", "test", "val"(, "val_clean")} of the final epoch (while training: of the last evaluated
                    one)
    best            {"epoch", "metric", "test", "val"(, "val_clean")} of the best epoch by "val", or null without a
                    val split
    fid_features    generative models only: FID's feature network ("resnet20 penultimate layer of <run dir>"), or
                    null when FID is not computed; the test metrics are then elbo, recon, kl, ssim, fid_recon and
                    fid_prior (icp.metrics.GenerativeMetrics) instead of the classification metrics
    wall_time_s     seconds of training + evaluation of the epochs kept, summed over resumed sessions
    compute_s       device seconds the run cost: every attempt's jobs[].seconds / shared_by, those of failed,
                    interrupted and requeued attempts included (>= wall_time_s for a run on a device of its own)
    images_per_s    training throughput: the epochs' images summed / their time_s summed (not a mean of the
                    epochs' rates, which a fast warm-up epoch would inflate)
    resumed         how many times the run was resumed from last.pt
    started_at, updated_at   ISO-8601 UTC timestamps
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import NamedTuple, Optional

from icp import jsonfile

SCHEMA_VERSION = 1
TERMINAL = ("complete", "diverged")  # a run in one of these is never trained again


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


NOT_CODE = ("results", "figures", "dvc.lock")  # tracked outputs of the pipeline, not what produced them


def code_version(root: Optional[Path] = None) -> dict:
    from icp import __version__

    root = root or Path(__file__).resolve().parent.parent
    commit = dirty = None
    if os.environ.get("ICP_GIT_COMMIT"):  # the copier of the code says which commit it is (a lent machine's copy
        # can carry a stale .git: the H200 records of 2026-12-04 name the session's first commit, not the code's)
        return {"version": __version__, "git_commit": os.environ["ICP_GIT_COMMIT"], "git_dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip() or None
        # dirty: a tracked file other than the pipeline's own outputs differs from the commit (a `dvc repro` rewrites
        # dvc.lock and results/ while it runs; they do not change what the code computes)
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     *(f":(exclude){p}" for p in NOT_CODE)], cwd=root,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_driver() -> Optional[str]:
    """The NVIDIA driver version (``nvidia-smi``), or None where it cannot be asked."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def environment(device) -> dict:
    """Where the run computed, enough to trace a difference between machines: the device's model (GPU, else the
    CPU model), the CPU model, torch's thread count and vector instruction set (float results depend on both),
    the GPU driver, and the library versions."""
    import torch

    from importlib import metadata

    try:  # from the package's metadata: importing torchvision costs about 1.7 s a run (issue 40)
        tv: Optional[str] = metadata.version("torchvision")
    except metadata.PackageNotFoundError:  # torchvision is optional for Fashion-MNIST with the resident loader
        tv = None
    cpu = cpu_model()
    cuda = device.type == "cuda"
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch before 2.1
        isa = None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": tv,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else cpu,
            "cpu": cpu, "cpu_threads": torch.get_num_threads(), "cpu_capability": isa,
            "gpu_driver": gpu_driver() if cuda else None, "hostname": socket.gethostname(),
            "platform": platform.platform()}


def job_info(job_id: Optional[str] = None, executor: Optional[str] = None) -> dict:
    """The record's ``jobs`` entry of this process; a plain ``icp train`` inside a SLURM job finds its job id in
    the environment (``ICP_JOB_ID``/``ICP_EXECUTOR``, set by a pack's job for its runs, else ``SLURM_JOB_ID``),
    and how many runs share its device (``ICP_DEVICE_SHARED_BY``, set by a pack's job; else 1)."""
    if job_id is None and os.environ.get("ICP_JOB_ID"):
        job_id, executor = os.environ["ICP_JOB_ID"], os.environ.get("ICP_EXECUTOR")
    elif job_id is None and os.environ.get("SLURM_JOB_ID"):
        job_id, executor = os.environ["SLURM_JOB_ID"], "slurm"
    try:
        shared = max(1, int(os.environ.get("ICP_DEVICE_SHARED_BY", "1")))
    except ValueError:
        shared = 1
    return {"job_id": job_id, "executor": executor, "hostname": socket.gethostname(), "started_at": now(),
            "shared_by": shared, "seconds": 0.0}


def stamp_compute(record: dict, seconds: float) -> None:
    """Set this attempt's (the last ``jobs`` entry's) wall seconds and the run's ``compute_s``: every attempt's
    seconds, each divided by the runs that shared its device, so failed, interrupted and requeued attempts count."""
    record["jobs"][-1]["seconds"] = seconds
    record["compute_s"] = sum((j.get("seconds") or 0.0) / (j.get("shared_by") or 1) for j in record["jobs"])


def scenario_tag(cfg) -> str:
    sc = cfg.scenario
    if sc.kind == "noisy":
        return f"{sc.noise_type[:3]}{sc.noise_rate:g}"
    if sc.kind == "fewshot":
        return f"{sc.shots}shot"
    return "clean"


def run_id(cfg) -> str:
    return (f"{cfg.method.name}-{cfg.model.name}-{cfg.data.dataset}-{scenario_tag(cfg)}-s{cfg.train.seed}-"
            f"{cfg.digest()}")


def new_record(cfg, scenario: dict, device, model_params: int, rid: Optional[str] = None) -> dict:
    stamp = now()
    return {
        "schema": SCHEMA_VERSION, "run_id": rid or run_id(cfg), "status": "running", "error": None,
        "method": cfg.method.name, "method_options": cfg.method.options, "model": cfg.model.name,
        "model_params": model_params, "dataset": cfg.data.dataset, "scenario": scenario, "seed": cfg.train.seed,
        "config": cfg.to_dict(), "config_digest": cfg.digest(), "code": code_version(), "env": environment(device),
        "jobs": [], "epochs": [], "last": None, "best": None, "wall_time_s": 0.0, "compute_s": 0.0,
        "images_per_s": None, "resumed": 0, "started_at": stamp, "updated_at": stamp,
    }


def write(record: dict, path: str | Path, stamp: bool = True) -> None:
    """Atomic JSON write (:func:`icp.jsonfile.write`), stamping ``updated_at`` unless ``stamp`` is False (a final
    record written again as its checkpoint holds it, which must read the same as when the run ended)."""
    if stamp:
        record["updated_at"] = now()
    jsonfile.write(record, path)


def throughput(epochs: list) -> Optional[float]:
    """Training images per second over ``epochs`` (record entries): total images / total training time."""
    time_s = sum(e["time_s"] for e in epochs)
    return sum(e["images"] for e in epochs) / time_s if epochs and time_s > 0 else None


def read(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


NAME = "record.json"
STOPPED = "record.stopped.json"  # a stopped run's record, set aside so that the workflow resumes the run
CORRUPT = "record.corrupt.json"  # a record that could not be parsed, kept for a look


class Found(NamedTuple):
    """What a run directory holds: its record (or None), where it was read, and what is wrong with it ("" = fine)."""
    record: Optional[dict]
    path: Path
    problem: str


def load(run_dir: str | Path) -> Found:
    """The run's record: ``record.json``, else the record of a stopped run set aside (:func:`set_aside`). A record that
    exists but cannot be parsed (truncated, corrupted) comes back as ``problem`` ("corrupt record.json: <why>"), never
    as if the run had not started."""
    run_dir = Path(run_dir)
    for name in (NAME, STOPPED):
        path = run_dir / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            return Found(None, path, f"unreadable {name}: {exc.strerror or exc}")
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or "status" not in record:
                raise ValueError("not a run record")
        except ValueError as exc:
            return Found(None, path, f"corrupt {name} ({len(text.encode())} bytes): {str(exc).splitlines()[0]}")
        return Found(record, path, "")
    return Found(None, run_dir / NAME, "")


def set_aside_corrupt(run_dir: str | Path) -> Optional[str]:
    """Move a ``record.json`` that cannot be parsed to ``record.corrupt.json`` and say so in one line; None when the
    record is fine or absent. Snakemake would count the corrupt file as the run's finished output: set aside, the run
    is trained again, which rebuilds the record from ``last.pt`` (a complete run: no training) or resumes it."""
    found = load(run_dir)
    if not found.problem or found.path.name != NAME:
        return None
    os.replace(found.path, Path(run_dir) / CORRUPT)
    return f"{found.path}: {found.problem}; set aside as {CORRUPT}, the run is rebuilt from its last.pt"


STALE = "stale"  # <run dir>/stale/<digest>/: the state of a run made with another config, kept for a look
RUN_STATE = ("record.json", "record.stopped.json", "record.corrupt.json", "config.yaml")  # and every *.pt


def set_aside_stale(run_dir: str | Path, digest: str) -> Optional[str]:
    """Move the state of a run whose record was made with another config than the grid's run has today (its
    ``config_digest`` is not ``digest``: the grid changed a setting that is no factor of the run's id, or the code
    changed what a setting means, as ``data.val_protocol`` did) into ``stale/<its digest>/`` and say so in one line;
    None when the record is this config's or absent. Snakemake would count its record as the run's finished output
    (a code change moves no job's params), and the trainer refuses a ``last.pt`` of another config: set aside,
    nothing is lost and the run trains again."""
    run_dir = Path(run_dir)
    found = load(run_dir)
    old = (found.record or {}).get("config_digest")
    if not old or old == digest:
        return None
    from icp import runlock

    if runlock.busy(run_dir):  # a live trainer's: left alone
        return None
    dest = run_dir / STALE / str(old)
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and (path.name in RUN_STATE or path.suffix == ".pt"):
            os.replace(path, dest / path.name)
    return (f"{found.path}: made with another config (digest {old}; the grid's run today: {digest}); set aside in "
            f"{STALE}/{old}/, the run trains again")


def set_aside(run_dir: str | Path) -> Optional[Path]:
    """Move a stopped (not final) run's ``record.json`` to ``record.stopped.json`` and return where it went.

    Snakemake counts a job's output that exists as done, and removes the output of a job that fails: a run stopped
    by a fault keeps its record (its error and the compute of its attempts) beside, and running the workflow again
    resumes the run from ``last.pt`` (:meth:`icp.engine.Trainer.run` reads the attempts back). A final record
    (complete, diverged) is left where it is."""
    run_dir = Path(run_dir)
    found = load(run_dir)
    if found.path.name != NAME or not found.path.exists():
        return None
    if found.record is not None and found.record.get("status") in TERMINAL:
        return None
    os.replace(found.path, run_dir / STOPPED)
    return run_dir / STOPPED


def set_aside_idle(run_dir: str | Path) -> Optional[str]:
    """Set aside a ``record.json`` whose run is not final and that no live trainer holds (:func:`icp.runlock.busy`):
    a run stopped (``interrupted``, ``failed``, ``requeued``) or killed without a word (``running``) after the
    workflow gave up on its job. Snakemake would count it as the run's finished output; set aside, the run resumes
    from ``last.pt``. One line saying so, or None."""
    from icp import runlock

    found = load(run_dir)
    if found.path.name != NAME or found.record is None or found.record.get("status") in TERMINAL:
        return None
    if runlock.busy(run_dir):
        return None
    status = found.record.get("status")
    os.replace(found.path, Path(run_dir) / STOPPED)
    return f"{found.path}: {status}, not final and no trainer holds it; set aside as {STOPPED}, the run resumes"


# SLURM states of a job back in the queue after it ran: requeued (scontrol requeue, preemption, a node failure)
REQUEUED_STATES = ("PENDING", "REQUEUE_HOLD", "REQUEUE_FED")


def mark_requeued(run_dir: str | Path, job_id: str) -> bool:
    """Say ``requeued`` in the record of a run whose job SLURM put back in the queue, until the restart says
    ``running`` again: its trainer, killed by the requeue, left ``running`` (or ``interrupted``, a pack member that
    took the SIGTERM), and SLURM holds a requeued job about two minutes, in which ``icp status`` could not tell it
    from a live run. Only a record whose last attempt is this job is marked (a job pending for the first time has
    none), and only while the job is queued, when none of its processes can write the record any more. Returns
    whether it marked the record."""
    found = load(run_dir)
    rec = found.record
    if rec is None or found.path.name != NAME or rec.get("status") not in ("running", "interrupted"):
        return False
    jobs = rec.get("jobs") or []
    if not jobs or str(jobs[-1].get("job_id")) != str(job_id):
        return False
    rec["status"], rec["error"] = "requeued", None
    write(rec, found.path)
    return True


def taken_back(run_dir: str | Path, job_id: Optional[str]) -> bool:
    """Whether SLURM took this trainer's job back while the trainer still runs: ``record.json`` says ``requeued``
    (:func:`mark_requeued`, written by the launcher once the job is queued again) for an attempt of job ``job_id``.
    Such a trainer is an orphan (its node's slurmd lost, say): SLURM may give its device to another job, and the
    requeued job will train the run. It stops at the next epoch boundary (:meth:`icp.lifecycle.Attempt.saved_epoch`)."""
    if job_id is None:
        return False
    rec = load(run_dir).record
    jobs = (rec or {}).get("jobs") or []
    return bool(rec) and rec.get("status") == "requeued" and bool(jobs) and str(jobs[-1].get("job_id")) == str(job_id)


def stopped_before_training(run_id: str, config_digest: Optional[str], error: str, job: dict) -> dict:
    """The record of a run whose job ended before its training wrote one (no data on the node, a set-up error):
    its id, config digest, ``failed`` with the cause, and the job; no config or epochs. Kept set aside
    (:data:`STOPPED`): status and summaries count the run failed, and the run starts afresh next time."""
    stamp = now()
    return {"schema": SCHEMA_VERSION, "run_id": run_id, "status": "failed", "error": error,
            "config_digest": config_digest, "epochs": [], "jobs": [job], "resumed": 0, "started_at": stamp,
            "updated_at": stamp, "stub": True}
