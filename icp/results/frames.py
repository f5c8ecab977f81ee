"""Records to frames: one row per run, one row per epoch, read from ``record.json`` files (:mod:`icp.records`) and
nothing else; every table, summary and figure reads these frames (through ``summary.csv`` and ``epochs.csv``).

* :func:`runs_frame`: one row per run. Given a grid, every run of the grid has a row, with status ``missing``
  when it has no record yet, so a half-finished sweep is visible run by run; given paths, one row per record
  found. Columns: the run's factors, ``config_key`` (:func:`icp.config.cell_digest`: the same for runs that differ
  by seed alone) and ``setting_key`` (the same without the method section: the settings a variant shares with its
  baseline), its status, last-epoch and best-epoch test metrics, wall time, images/s (as recorded), cost
  (``train_images`` and ``train_time_s`` summed over its epochs; ``hours``: the compute of every attempt,
  ``compute_s``, else in older records ``wall_time_s``; ``gpu_hours`` the same on CUDA; ``attempts``: its jobs;
  ``teacher``: AI-KD's teacher run directory), and where it came from (code version, git commit, job ids, error).
* :func:`epochs_frame`: one row per epoch of every run with a record.
* :func:`read_summary` / :func:`write_summary`: ``summary.csv``, the runs frame as the later steps read it.

What is compared with what is set here too: :data:`CONDITION` (dataset, model, scenario), the variant of a run
(:func:`variant_of`) and per model kind (:func:`kind_of`) the :data:`BASELINE` variant and metric.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from icp import config as config_mod
from icp import naming
from icp import atomic, jsonfile, records
from icp.methods.options import OPTIONS, training_cost
from icp.models import GENERATIVE

METRICS = ("top1", "macro_f1", "ece", "nll", "ssim", "fid_recon", "fid_prior", "elbo", "recon", "kl")
RAW = ("nll", "fid_recon", "fid_prior", "elbo", "recon", "kl")  # shown as they are, not in %
CONDITION = ("dataset", "model", "scenario")
# per model kind: the variant every other is compared with, and the metric of that comparison
BASELINE = {"classifier": ("ce", "top1"), "generative": ("vae", "ssim")}


def kind_of(model: str) -> str:
    """``generative`` for a model of :data:`icp.models.GENERATIVE` (the VAE), else ``classifier``."""
    return "generative" if model in GENERATIVE else "classifier"


PER_RUN_OPTIONS = ("teacher",)  # AI-KD's teacher names the ce run of the same seed: not a condition


# ------------------------------------------------------------------------------------------ runs
# what a variant may change and still be compared with the baseline of its setting: its method, and its training
# length (a compute-matched ce trains longer, its schedule stretched alike)
SETTING_FREE = ("method", "train.epochs", "schedule")


def variant_of(method: str, options: dict) -> str:
    """``method[+option=value...]`` for the non-default options, as in the grid's run ids."""
    opts = {k: v for k, v in (options or {}).items() if k not in PER_RUN_OPTIONS}
    return naming.variant(method, naming.normalise_options(method, opts))


def _scenario_tag(scenario: dict) -> str:
    if scenario.get("kind") == "noisy":
        return f"{scenario['noise_type'][:3]}{scenario['noise_rate']:g}"
    if scenario.get("kind") == "fewshot":
        return f"{scenario['shots']}shot"
    return "clean"


def _best(rec: dict) -> tuple[Optional[float], Optional[int], str]:
    """(test top-1, epoch, selected by) of the best epoch, selected on the validation split (the record's
    ``best``); nothing for a run without one: no number here is ever selected on the test split."""
    if rec.get("best"):
        return rec["best"]["test"].get("top1"), rec["best"]["epoch"], "val"
    return None, None, ""


def _train_work(rec: dict) -> tuple[float, float]:
    """(training images, training seconds) summed over the record's epochs: an epoch's ``images``, or in records
    written before epochs counted them, its images/s times its seconds (the same number: the rate was
    images ÷ seconds)."""
    images = seconds = 0.0
    for e in rec.get("epochs") or []:
        time_s = e.get("time_s") or 0.0
        images += e["images"] if e.get("images") is not None else (e.get("images_per_s") or 0.0) * time_s
        seconds += time_s
    return images, seconds


def _refinement(rec: dict) -> dict:
    """How much an ICP run's refinement moved things at its last epoch, from the recorded diagnostics:
    ``input_shift`` (mean |x_K − x|, normalised input units) and ``feature_mse.<tap>`` (MSE between the clean and
    the refined input's features); empty for other methods and for warm-up-only epochs."""
    epochs = rec.get("epochs") or []
    diag = (epochs[-1].get("diagnostics") or {}) if epochs else {}
    return {k: v for k, v in diag.items() if k == "input_shift" or k.startswith("feature_mse.")}


def _compute(method: str, options: dict, epochs: int, model: Optional[str] = None) -> float:
    """A run's training FLOPs in ce epochs of its data (:func:`icp.methods.options.training_cost`, counted on its
    model where results/reference/flops.csv says so); NaN for a method this version does not know."""
    if method not in OPTIONS:
        return math.nan
    try:
        return training_cost(method, options, int(epochs), model)
    except Exception:  # noqa: BLE001  (options of another version: no cost to declare)
        return math.nan
def run_row(rec: Optional[dict], run=None, path: Optional[str] = None, problem: str = "") -> dict:
    """The summary row of one run: from its record, or (``rec`` None) the grid's factors with status missing, or
    corrupt (``problem``: a record.json that cannot be parsed, :func:`icp.records.load`)."""
    if rec is None or ("config" not in rec and run is not None):  # none, or a job's that stopped before training
        status = rec["status"] if rec is not None else "corrupt" if problem else "missing"
        error = rec.get("error") if rec is not None else problem
        return {"run_id": run.run_id, "studies": ";".join(run.studies), "dataset": run.dataset, "model": run.model,
                "scenario": run.scenario, "method": run.method,
                "variant": run.variant,
                "seed": run.seed, "status": status, "path": run.run_dir,
                **({"error": error} if error else {}),
                **({"attempts": len(rec.get("jobs") or [])} if rec is not None else {})}
    cfg = rec["config"]
    last = (rec.get("last") or {}).get("test") or {}
    last_val = (rec.get("last") or {}).get("val") or {}
    oracle = (rec.get("last") or {}).get("val_clean")  # a noise scenario's clean validation labels: never a choice
    best, best_epoch, best_by = _best(rec)
    env = rec.get("env") or {}
    compute_s = rec["compute_s"] if rec.get("compute_s") is not None else rec.get("wall_time_s") or 0.0
    hours = compute_s / 3600
    images, seconds = _train_work(rec)
    options = rec.get("method_options") or {}
    return {
        "run_id": rec.get("run_id"), "studies": ";".join(run.studies) if run is not None else "",
        "dataset": rec["dataset"], "model": rec["model"], "scenario": _scenario_tag(cfg["scenario"]),
        "method": rec["method"],
        "variant": naming.variant_of_id(rec.get("run_id")) or variant_of(rec["method"], options),
        "seed": rec["seed"],
        "config_key": config_mod.cell_digest(cfg), "setting_key": config_mod.cell_digest(cfg, without=SETTING_FREE),
        "status": rec["status"], "epochs": cfg["train"]["epochs"], "epochs_done": len(rec.get("epochs") or []),
        **{m: last.get(m) for m in METRICS},
        "val_top1": last_val.get("top1"), **({"val_clean_top1": oracle.get("top1")} if oracle else {}),
        "best_top1": best, "best_epoch": best_epoch, "best_by": best_by,
        "test_size": (rec.get("scenario") or {}).get("test_size"), "val_size": (rec.get("scenario") or {}).get("val_size"),
        "wall_time_s": rec.get("wall_time_s"), "images_per_s": rec.get("images_per_s"),
        "train_images": images, "train_time_s": seconds,
        "device": env.get("device"), "device_name": env.get("device_name"),
        # the CPU kernels torch picked (avx512, avx2, default) and its threads: what moves float order across CPUs
        "cpu_capability": env.get("cpu_capability"), "cpu_threads": env.get("cpu_threads"), "hours": hours,
        "gpu_hours": hours if str(env.get("device", "")).startswith("cuda") else 0.0,
        **_refinement(rec),
        "compute_ce_epochs": _compute(rec["method"], options, cfg["train"]["epochs"], (cfg.get("model") or {}).get("name")),
        "attempts": len(rec.get("jobs") or []), "teacher": options.get("teacher") or None,
        "method_options": json.dumps({k: v for k, v in options.items() if k not in PER_RUN_OPTIONS}, sort_keys=True),
        "fid_features": rec.get("fid_features"),
        "code_version": (rec.get("code") or {}).get("version"), "git_commit": (rec.get("code") or {}).get("git_commit"),
        "git_dirty": (rec.get("code") or {}).get("git_dirty"),
        "job_ids": ";".join(str(j.get("job_id")) for j in rec.get("jobs") or [] if j.get("job_id") is not None),
        "error": rec.get("error"), "path": path or (run.run_dir if run is not None else None),
    }


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``record.json`` under the given directories, and the given files as they are."""
    found = []
    for p in map(Path, paths):
        found += sorted(p.rglob("record.json")) if p.is_dir() else [p]
    return found


def runs_frame(grid=None, paths: Optional[Iterable[str | Path]] = None, runs_dir: Optional[str] = None) -> pd.DataFrame:
    """One row per run: every run of ``grid`` (records under ``runs_dir`` or the grid's own), else every record
    under ``paths``."""
    rows = []
    if grid is not None:
        for run in grid.runs.values():
            path = Path(runs_dir, run.run_id) if runs_dir else Path(run.run_dir)
            found = records.load(path)  # record.json, or a stopped run's record set aside
            rows.append(run_row(found.record, run, str(path), found.problem))
    for path in find_records(paths or []):
        rec = jsonfile.read(path)
        if rec is not None:
            rows.append(run_row(rec, path=str(path.parent)))
    return pd.DataFrame(rows)


def epochs_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of every run in ``runs`` that has a record: its factors, the epoch's test metrics, training
    loss, lr, speed, and the method's diagnostics as ``diag.<name>`` (ICP: alpha, input_shift, feature_mse.<tap>)."""
    rows = []
    keep = ["run_id", "studies", "dataset", "model", "scenario", "method", "variant", "seed", "status",
            "method_options"]
    for _, run in runs[~runs.status.isin(["missing", "corrupt"])].iterrows():
        rec = records.load(run.path).record
        for e in (rec or {}).get("epochs") or []:
            test = e.get("test") or {}
            rows.append({**{k: run[k] for k in keep if k in run}, "epoch": e["epoch"],
                         **{f"test_{m}": test.get(m) for m in METRICS},
                         "train_loss": (e.get("train") or {}).get("loss"), "lr": e.get("lr"),
                         "time_s": e.get("time_s"), "images_per_s": e.get("images_per_s"),
                         **{f"diag.{k}": v for k, v in (e.get("diagnostics") or {}).items()}})
    return pd.DataFrame(rows)
def read_summary(path) -> pd.DataFrame:
    """``summary.csv`` (a path or a file object) as :func:`runs_frame` wrote it: ids, keys and errors as text."""
    return pd.read_csv(path, dtype={"studies": str, "job_ids": str, "git_commit": str, "error": str,
                                    "config_key": str, "setting_key": str, "teacher": str})
def write_summary(runs: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    atomic.write(runs.to_csv(index=False), path, mkdir=True)
    return path


def study_runs(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    """The rows of ``runs`` that belong to ``study`` (its ``studies`` column lists it)."""
    return runs[runs.studies.fillna("").str.split(";").map(lambda s: study in s)]
