"""From run records to the paper's tables: one row per run, one cell per condition, one table file per study.

Everything here reads ``record.json`` files (:mod:`icp.records`) and nothing else; ``icp report``, the Snakefile's
aggregation rules and the DVC laptop pipeline all call it.

* :func:`runs_frame`: one row per run. Given a grid, every run of the grid has a row, with status ``missing``
  when it has no record yet, so a half-finished sweep is visible run by run; given paths, one row per record
  found. Columns: the run's factors, ``config_key`` (:func:`icp.config.cell_digest`: the same for runs that differ
  by seed alone) and ``setting_key`` (the same without the method section: the settings a variant shares with its
  baseline), its status, last-epoch and best-epoch test metrics, wall time, images/s (as recorded), cost
  (``train_images`` and ``train_time_s`` summed over its epochs; ``hours``: the compute of every attempt,
  ``compute_s``, else in older records ``wall_time_s``; ``gpu_hours`` the same on CUDA; ``attempts``: its jobs;
  ``teacher``: AI-KD's teacher run directory), and where it came from (code version, git commit, job ids, error).
* :func:`cells`: per condition (dataset, model, scenario), variant (method with its non-default options) and
  config key, the mean and standard deviation (ddof 1) over seeds of the ``complete`` runs, with ``n``;
  ``diverged`` runs are counted and never averaged in; runs missing, failed or in flight are counted as
  ``not_final``; ``left_out`` counts them per status. A grid run without a record joins the cell of its condition
  and variant when that cell has one config key. Each variant is compared with the baseline cell of the same
  condition and settings (``ce`` on top-1 for classifiers, ``vae`` on SSIM for the generative study) over the
  seeds both have complete (:mod:`icp.stats`): mean paired difference ``delta``, its 95 % t interval
  ``ci_low``/``ci_high``, ``t_stat``, the two-sided paired t-test ``p_value`` (``scipy.stats.ttest_rel``; none
  below two pairs or when every difference is zero; t = ±inf for constant differences), ``p_holm`` (Holm across
  the variants compared with that baseline) and ``pairs``. Cost: ``images_per_s`` = total images ÷ total training
  time over the complete runs (so a slow epoch weighs by its time), ``speed_vs_baseline`` the ratio of those;
  ``hours``, ``gpu_hours`` and ``attempts`` summed over every run with a record, failed, diverged or requeued
  alike (lost work was spent); ``teacher_hours``/``teacher_gpu_hours``: the hours of the runs whose directory is
  the ``teacher`` of one of the cell's runs (AI-KD's ce teachers).
* :func:`write_tables`: ``<study>.csv`` (the cells, machine-readable), ``<study>.md``, ``<study>.tex`` (booktabs)
  and ``<study>.html`` (the ``.md`` as a self-contained page, which the Snakemake report shows): test top-1 at the
  last epoch (the headline), at the best epoch (labelled with what selected it), macro-F1, ECE,
  the difference to ``ce`` (``+3.00 [+0.52, +5.48] (3, p=0.035, Holm p=0.070)``; ``p < 0.001`` below a thousandth,
  ``t = ∞`` for constant differences), and a cost table (images/s over the study's complete runs and its ratio to
  ``ce``, GPU-, device- and teacher GPU-hours and attempts over every attempt). A cell reads ``mean ± std (n)``,
  or ``(2/3, 1 diverged)`` when runs are left out. In each column, bold marks the best value as printed among the
  "full" cells (no run left out, and as many runs as the table's largest cell), only when no other full cell
  prints the same. Runs that are not in a table are listed by run id under it.
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from icp import config as config_mod
from icp import grid as grid_mod
from icp import jsonfile, records, stats

METRICS = ("top1", "macro_f1", "ece", "nll", "ssim", "fid_recon", "fid_prior", "elbo", "recon", "kl")
LOWER_IS_BETTER = ("ece", "nll", "fid_recon", "fid_prior", "recon")
RAW = ("nll", "fid_recon", "fid_prior", "elbo", "recon", "kl")  # shown as they are, not in %
CONDITION = ("dataset", "model", "scenario")
# per model kind: the variant every other is compared with, and the metric of that comparison
BASELINE = {"classifier": ("ce", "top1"), "generative": ("vae", "ssim")}


def kind_of(model: str) -> str:
    return "generative" if grid_mod._generative(model) else "classifier"
PER_RUN_OPTIONS = ("teacher",)  # AI-KD's teacher names the ce run of the same seed: not a condition


# ------------------------------------------------------------------------------------------ runs
# what a variant may change and still be compared with the baseline of its setting: its method, and its training
# length (a compute-matched ce trains longer, its schedule stretched alike)
SETTING_FREE = ("method", "train.epochs", "schedule")


def variant_of(method: str, options: dict) -> str:
    """``method[+option=value...]`` for the non-default options, as in the grid's run ids."""
    opts = {k: v for k, v in (options or {}).items() if k not in PER_RUN_OPTIONS}
    return grid_mod.variant(method, grid_mod._normalise_options(method, opts))


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


def _compute(method: str, options: dict, epochs: int) -> float:
    """A run's training FLOPs in ce epochs of its data (:func:`icp.methods.options.training_cost`); NaN for a
    method this version does not know."""
    from icp.methods.options import OPTIONS, training_cost

    if method not in OPTIONS:
        return math.nan
    try:
        return training_cost(method, options, int(epochs))
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
        "variant": grid_mod.variant_of_id(rec.get("run_id")) or variant_of(rec["method"], options),
        "seed": rec["seed"],
        "config_key": config_mod.cell_digest(cfg), "setting_key": config_mod.cell_digest(cfg, without=SETTING_FREE),
        "status": rec["status"], "epochs": cfg["train"]["epochs"], "epochs_done": len(rec.get("epochs") or []),
        **{m: last.get(m) for m in METRICS},
        "val_top1": last_val.get("top1"), "best_top1": best, "best_epoch": best_epoch, "best_by": best_by,
        "test_size": (rec.get("scenario") or {}).get("test_size"), "val_size": (rec.get("scenario") or {}).get("val_size"),
        "wall_time_s": rec.get("wall_time_s"), "images_per_s": rec.get("images_per_s"),
        "train_images": images, "train_time_s": seconds,
        "device": env.get("device"), "device_name": env.get("device_name"),
        # the CPU kernels torch picked (avx512, avx2, default) and its threads: what moves float order across CPUs
        "cpu_capability": env.get("cpu_capability"), "cpu_threads": env.get("cpu_threads"), "hours": hours,
        "gpu_hours": hours if str(env.get("device", "")).startswith("cuda") else 0.0,
        **_refinement(rec),
        "compute_ce_epochs": _compute(rec["method"], options, cfg["train"]["epochs"]),
        "attempts": len(rec.get("jobs") or []), "teacher": options.get("teacher") or None,
        "method_options": json.dumps({k: v for k, v in options.items() if k not in PER_RUN_OPTIONS}, sort_keys=True),
        "fid_features": rec.get("fid_features"),
        "code_version": (rec.get("code") or {}).get("version"), "git_commit": (rec.get("code") or {}).get("git_commit"),
        "git_dirty": (rec.get("code") or {}).get("git_dirty"),
        "job_ids": ";".join(str(j.get("job_id")) for j in rec.get("jobs") or [] if j.get("job_id") is not None),
        "error": rec.get("error"), "path": path or (run.run_dir if run is not None else None),
    }


def find_records(paths: Iterable[str | Path]) -> list[Path]:
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


def metrics_tree(all_cells: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """The DVC metric (``dvc metrics show``): what a person compares, ``{study: {"dataset/model/scenario":
    {variant: leaf}}}`` and the run counts per status (``runs``). A leaf is the condition's headline metric at the
    last epoch (the metric of :data:`BASELINE`'s comparison: test top-1 for a classifier, SSIM for the VAE) as
    ``<metric>_mean``, ``<metric>_std`` over seeds and ``n``; a variant compared with its baseline adds
    ``<metric>_delta_vs_<baseline>`` (mean paired difference), its ``p_value`` and the ``test`` that gave it (``t``:
    a paired t-test from three pairs with a spread; ``sign-flip``: the exact sign-flip p, with fewer pairs or when
    every seed differs alike; none below two pairs). Intervals, Holm, other metrics and cost are in the study
    tables. Where one condition and variant hold runs of several configs, each is its own ``variant @config_key``.
    Tuning trials are left out (the tables' Equal tuning section and the ``tuning`` figure show them); ``runs``
    counts them."""
    from icp.tuning_table import is_trial

    tree: dict = {"runs": {s: int(n) for s, n in runs.status.value_counts().items()}}
    all_cells = all_cells[~is_trial(all_cells.variant)]  # a tuning trial (one seed) is the tuning section's
    for study in sorted({s for v in runs.studies.fillna("") for s in v.split(";") if s}):
        keys = study_runs(runs, study)[[*CONDITION, "variant"]].drop_duplicates()
        study_cells = all_cells.merge(keys, on=[*CONDITION, "variant"])
        several = study_cells.groupby([*CONDITION, "variant"], dropna=False).variant.transform("size") > 1
        for (_, c), split in zip(study_cells.iterrows(), several):
            metric, baseline = c.delta_of, c.baseline
            leaf = {"n": int(c.n)}
            for key, value in ((f"{metric}_mean", c[f"{metric}_mean"]), (f"{metric}_std", c[f"{metric}_std"])):
                if value == value:
                    leaf[key] = round(float(value), 6)
            if c.variant != baseline and c.delta == c.delta:
                leaf[f"{metric}_delta_vs_{baseline}"] = round(float(c.delta), 6)
                if c.p_value == c.p_value:  # the t-test's, or the sign-flip p with < 3 pairs or constant differences
                    leaf["p_value"] = round(float(c.p_value), 6)
                    leaf["test"] = c.test
            variant = f"{c.variant} @{c.config_key}" if split else c.variant
            tree.setdefault(study, {}).setdefault("/".join(str(c[k]) for k in CONDITION), {})[variant] = leaf
    return tree


def headline_tree(tree: dict) -> dict:
    """DVC's metric (``dvc metrics show``, ``headline.json``): the headline of :func:`metrics_tree` alone, ``{study:
    {"dataset/model/scenario": {variant: mean}}}``, each variant's last-epoch mean of the condition's headline metric
    (test top-1 for a classifier, SSIM for the VAE) in the tables' units and digits (fractions in %: 72.7 for
    0.727). A variant without a complete run is left out. Std, n, differences and p-values stay in
    ``metrics.json``."""
    out: dict = {}
    for study, conditions in tree.items():
        if study == "runs":
            continue
        for condition, variants in conditions.items():
            for variant, leaf in variants.items():
                means = [k for k in leaf if k.endswith("_mean")]
                if means:
                    metric = means[0].removesuffix("_mean")
                    out.setdefault(study, {}).setdefault(condition, {})[variant] = _shown(leaf[means[0]], metric)
    return out


def curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Learning curves for DVC's plots: one file per condition, ``<metric>/<dataset>_<model>_<scenario>``, where
    ``metric`` is the condition's headline (:data:`BASELINE`: test top-1 for classifiers, SSIM for the VAE); in
    long format, one row per variant and epoch: ``epoch, variant, <metric>_mean, <metric>_std, n`` (mean and std
    over the complete runs that have the metric at that epoch, and their number). dvc.yaml draws each file as one
    plot with a line per variant (template ``.dvc/plots/variants.json``)."""
    out = {}
    if epochs.empty:  # no run has a readable record yet
        return out
    from icp.tuning_table import is_trial

    done = epochs[(epochs.status == "complete") & ~is_trial(epochs.variant)]  # a tuning trial: the tuning figure's
    for key, g in done.groupby(list(CONDITION), sort=False):
        metric = headline_of(str(key[1]))
        column = f"test_{metric}"
        g = g.dropna(subset=[column]) if column in g else g.iloc[:0]
        if g.empty:
            continue
        order = {v: i for i, v in enumerate(dict.fromkeys(g.variant))}  # the grid's order of variants
        frame = (g.groupby(["variant", "epoch"])[column].agg(["mean", "std", "count"]).reset_index()
                 .rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std", "count": "n"}))
        frame = frame.sort_values(["variant", "epoch"], key=lambda s: s.map(order) if s.name == "variant" else s)
        columns = ["epoch", "variant", f"{metric}_mean", f"{metric}_std", "n"]
        out[curve_name(*map(str, key))] = frame[columns].round(6).reset_index(drop=True)
    return out


def headline_of(model: str) -> str:
    """The metric a condition is compared on (:data:`BASELINE`): ``top1`` for a classifier, ``ssim`` for the VAE."""
    return BASELINE[kind_of(model)][1]


def curve_name(dataset: str, model: str, scenario: str) -> str:
    """The learning-curve file of a condition under ``curves/`` (without ``.csv``):
    ``<metric>/<dataset>_<model>_<scenario>``, the names dvc.yaml's plots list."""
    return f"{headline_of(model)}/" + "_".join((dataset, model, scenario)).replace("/", "-")


def summarize(grid, out_dir: str | Path, runs_dir: Optional[str] = None) -> dict[str, Path]:
    """``summary.csv`` (one row per grid run), ``epochs.csv``, ``metrics.json`` (per study, condition and variant
    the headline's mean, std, n, difference to the baseline and p: :func:`metrics_tree`), ``headline.json`` (DVC's
    metric: the means alone, in the tables' units, :func:`headline_tree`) and ``curves/<metric>/<condition>.csv``
    (DVC's plots, :func:`curves`) under ``out_dir``."""
    import shutil

    out_dir = Path(out_dir)
    runs = runs_frame(grid, runs_dir=runs_dir)
    paths = {"summary": write_summary(runs, out_dir / "summary.csv"), "epochs": out_dir / "epochs.csv",
             "metrics": out_dir / "metrics.json", "headline": out_dir / "headline.json", "curves": out_dir / "curves"}
    epochs = epochs_frame(runs)
    _atomic_text(epochs.to_csv(index=False), paths["epochs"])
    tree = metrics_tree(cells(runs), runs)
    _atomic_text(json.dumps(tree, indent=1, sort_keys=True), paths["metrics"])
    _atomic_text(json.dumps(headline_tree(tree), indent=1, sort_keys=True), paths["headline"])
    shutil.rmtree(paths["curves"], ignore_errors=True)
    for name, frame in curves(epochs).items():
        _atomic_text(frame.to_csv(index=False), paths["curves"] / f"{name}.csv")
    paths["curves"].mkdir(parents=True, exist_ok=True)
    return paths


def read_summary(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"studies": str, "job_ids": str, "git_commit": str, "error": str,
                                    "config_key": str, "setting_key": str, "teacher": str})


def _atomic_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ cells
# columns of runs_frame that cells reads; a grid whose runs all lack records has none of them
RECORD_COLUMNS = ("config_key", "setting_key", "train_images", "train_time_s", "hours", "gpu_hours", "attempts",
                  "teacher", "device_name", "best_by", "epochs", "fid_features", "test_size", "val_top1", "method_options",
                  "compute_ce_epochs")
# what a cell may leave out, counted per status in its text: "(2/3, 1 diverged)"
LEFT_OUT = ("corrupt", "diverged", "failed", "interrupted", "missing", "requeued", "running")
COMPARISON = ("delta", "ci_low", "ci_high", "t_stat", "p_value", "p_holm", "pairs", "test", "constant",
              "speed_vs_baseline")
ALPHA = 0.05  # the level at which a Holm-adjusted difference counts as significant (and may be bold)


def _with_config_keys(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``runs`` with every :data:`RECORD_COLUMNS` column, and a config_key for the runs without a record
    (missing): the one key of the other runs of their condition and variant, so that they count in that cell;
    where those runs have several keys, a missing run cannot say which it belongs to and stays apart."""
    runs = runs.reindex(columns=list(dict.fromkeys([*runs.columns, *RECORD_COLUMNS])))
    only = runs.groupby(keys, sort=False, dropna=False).config_key.transform(
        lambda k: k.dropna().iloc[0] if k.dropna().nunique() == 1 else math.nan)
    return runs.assign(config_key=runs.config_key.fillna(only))


def _run_dir(path: str) -> str:
    """A run directory, resolved; given a checkpoint inside one (AI-KD's teacher may name ``best.pt``), its
    directory."""
    p = Path(path)
    return str((p.parent if p.suffix == ".pt" else p).resolve())


def _teacher_cost(recorded: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """Hours of the runs that trained the teachers named by ``recorded`` (AI-KD's ce runs), matched by run
    directory; ``run_dirs``: :func:`_run_dir` of every run's path."""
    teachers = {_run_dir(t) for t in recorded.teacher if isinstance(t, str) and t}
    used = runs[run_dirs.isin(teachers)] if teachers else runs.iloc[:0]
    return {"teacher_hours": float(used.hours.sum()), "teacher_gpu_hours": float(used.gpu_hours.sum())}


def _cost(group: pd.DataFrame, done: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """A cell's cost: throughput over its complete runs (total images ÷ total training time, so a slow epoch weighs
    by its time), and the hours and attempts of every run with a record, whatever became of it: work lost to a
    failure or a requeue was spent all the same."""
    recorded = group[group.status != "missing"]
    images, seconds = float(done.train_images.sum()), float(done.train_time_s.sum())
    return {"train_images": images, "train_time_s": seconds,
            "images_per_s": images / seconds if seconds > 0 else math.nan,
            "hours": float(recorded.hours.sum()), "gpu_hours": float(recorded.gpu_hours.sum()),
            "attempts": int(recorded.attempts.sum()), **_teacher_cost(recorded, runs, run_dirs),
            "devices": ",".join(sorted(set(done.device_name.dropna())))}


def _cell(row: dict, group: pd.DataFrame, runs: pd.DataFrame, run_dirs: pd.Series) -> dict:
    """One cell: ``row`` (its keys) with counts, mean and std over the complete runs of ``group``, and cost."""
    done = group[group.status == "complete"]
    counts = group.status.value_counts()
    row.update(method=group.method.iloc[0], n=len(done), diverged=int(counts.get("diverged", 0)),
               not_final=int(len(group) - len(done) - counts.get("diverged", 0)),
               left_out=", ".join(f"{counts[s]} {s}" for s in LEFT_OUT if s in counts),
               setting_key=done.setting_key.iloc[0] if len(done) else math.nan)
    for m in (*METRICS, "best_top1", "val_top1", "compute_ce_epochs"):
        values = done[m].astype(float) if m in done else pd.Series(dtype=float)
        row[f"{m}_mean"] = values.mean() if len(values) else math.nan
        row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
    for m in refinement_columns(group):
        values = done[m].astype(float).dropna()
        row[m] = values.mean() if len(values) else math.nan
    row["best_by"] = ",".join(sorted(set(done.best_by.dropna()) - {""}))
    row.setdefault("epochs", ",".join(str(int(e)) for e in sorted(set(done.epochs.dropna()))))
    row["fid_features"] = ",".join(sorted({_fid_kind(v) for v in done.fid_features.dropna()}))
    row["baseline"], row["delta_of"] = BASELINE[kind_of(row["model"])]
    return {**row, **_cost(group, done, runs, run_dirs)}


def refinement_columns(frame: pd.DataFrame) -> list[str]:
    """The refinement diagnostics among ``frame``'s columns (:func:`_refinement`): input shift, then each tap."""
    taps = sorted(c for c in frame.columns if c.startswith("feature_mse."))
    return (["input_shift"] if "input_shift" in frame.columns else []) + taps


def resolution(runs: pd.DataFrame, metric: str) -> Optional[float]:
    """The smallest step of ``metric`` over ``runs``: top-1 counts test images, so 1 / the test split's size
    (None where the runs' test splits differ in size, or for a continuous metric)."""
    sizes = set(runs.test_size.dropna().astype(int)) if metric == "top1" and "test_size" in runs else set()
    return 1.0 / sizes.pop() if len(sizes) == 1 else None


def _paired(variant: pd.DataFrame, base: pd.DataFrame, metric: str) -> stats.Paired:
    """:func:`icp.stats.paired` of ``metric`` over the seeds both have complete, at the metric's resolution."""
    pairs = variant.set_index("seed")[metric].to_frame("v").join(base.set_index("seed")[metric].to_frame("b"),
                                                                 how="inner").dropna()
    return stats.paired(pairs.v.astype(float), pairs.b.astype(float),
                        resolution=resolution(pd.concat([variant, base]), metric))


def with_holm(table: pd.DataFrame, family: Sequence[str]) -> pd.DataFrame:
    """``p_holm``: Holm's correction over each family of comparisons, the cells that share ``family``'s columns
    (a study table: one condition of that study; ``icp report``: one condition and setting)."""
    table = table.assign(p_holm=math.nan)
    compared = table[table.p_value.notna() & (table.variant != table.baseline)]
    for _, idx in compared.groupby(list(family), sort=False, dropna=False).groups.items():
        table.loc[idx, "p_holm"] = stats.holm(table.loc[idx, "p_value"].tolist())
    return table


def _compare(table: pd.DataFrame, done: list[pd.DataFrame], condition: list[str]) -> pd.DataFrame:
    """Fill :data:`COMPARISON`: every cell against the baseline cell of its condition trained in the same setting
    (the same config but for the method: :func:`icp.config.cell_digest` without ``method``), its metric paired by
    seed, Holm's correction across the variants compared with that baseline (a study's tables redo it over their
    own family, :func:`with_holm`); ``done[i]``: cell i's complete runs."""
    table = table.assign(**{**{k: math.nan for k in COMPARISON}, "pairs": 0, "test": "", "constant": False})
    for _, idx in table[table.n > 0].groupby([*condition, "setting_key"], sort=False).groups.items():
        base = [i for i in idx if table.at[i, "variant"] == table.at[i, "baseline"]]
        if not base:
            continue
        table.at[base[0], "speed_vs_baseline"] = 1.0
        others = [i for i in idx if i != base[0]]
        for i in others:
            result = _paired(done[i], done[base[0]], table.at[i, "delta_of"])
            for k in ("delta", "ci_low", "ci_high", "t_stat", "p_value", "pairs", "test", "constant"):
                table.at[i, k] = getattr(result, k)
            table.at[i, "speed_vs_baseline"] = table.at[i, "images_per_s"] / table.at[base[0], "images_per_s"]
    return with_holm(table, [*condition, "setting_key"])


def cells(runs: pd.DataFrame, extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per condition, variant and config (:func:`icp.config.cell_digest`: runs that differ by seed alone): n, mean
    and std over seeds of the complete runs, what was left out, cost, and the paired comparison with the baseline
    under the same condition. ``extra_keys`` (``epochs`` for records that do not come from one grid) split
    conditions further."""
    condition = [*CONDITION, *extra_keys]
    runs = _with_config_keys(runs, [*condition, "variant"])
    keys = [*condition, "variant", "config_key"]
    run_dirs = runs.path.map(_run_dir) if runs.teacher.notna().any() else pd.Series(index=runs.index, dtype=str)
    groups = [g for _, g in runs.groupby(keys, sort=False, dropna=False)]
    table = pd.DataFrame([_cell(dict(zip(keys, g[keys].iloc[0])), g, runs, run_dirs) for g in groups])
    return _compare(table, [g[g.status == "complete"] for g in groups], condition)


# ------------------------------------------------------------------------------------------ tables
def _scale_digits(metric: str) -> tuple[float, int]:
    """How a metric is shown: (factor, decimals); fractions in %, NLL with three decimals."""
    return (1.0, 3) if metric == "nll" else (1.0, 2) if metric in RAW else (100.0, 2)


def _shown(value: float, metric: str) -> float:
    """``value`` as the tables show it (scaled and rounded), so that values which print alike compare alike."""
    scale, digits = _scale_digits(metric)
    return float(f"{value * scale:.{digits}f}") if value == value else math.nan


def _pct(value: float, scale: float = 100.0, digits: int = 2) -> str:
    return "" if value != value else f"{value * scale:.{digits}f}"


def _count_text(row) -> str:
    """``3`` for a cell whose runs are all in; ``2/3, 1 diverged`` when some are left out, and why."""
    total = row["n"] + row["diverged"] + row["not_final"]
    return str(row["n"]) if total == row["n"] else f"{row['n']}/{total}, {row['left_out']}"


def _cell_text(row, metric: str, tex: bool) -> str:
    scale, digits = _scale_digits(metric)
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean != mean:
        return "–" if row["n"] else f"– ({_count_text(row)})"
    pm = r" $\pm$ " if tex else " ± "
    text = _pct(mean, scale, digits) + (pm + _pct(std, scale, digits) if std == std else "")
    return f"{text} ({_count_text(row)})"


def _condition_label(study_cells: pd.DataFrame) -> pd.Series:
    varying = [c for c in CONDITION if study_cells[c].nunique() > 1] or ["dataset"]
    return study_cells[varying].astype(str).agg("/".join, axis=1)


def _full(table: pd.DataFrame) -> pd.Series:
    """The cells with the study's full seed count: none of their runs left out, and as many runs as the cell with
    the most. Only these may be bold: a mean over fewer seeds is not comparable, however high."""
    total = table.n + table.diverged + table.not_final
    return (table.n == total) & (table.n == total.max())


def significant(row) -> bool:
    """A variant whose Holm-adjusted difference to its baseline is significant at :data:`ALPHA` and better."""
    return (row["variant"] != row["baseline"] and row.get("p_holm") == row.get("p_holm")
            and row["p_holm"] < ALPHA and row["delta"] > 0)


def _pivot(study_cells: pd.DataFrame, text, shown, lower: bool, tex: bool) -> pd.DataFrame:
    """Variants × conditions of ``text(row)``; in each column, the best ``shown(row)`` (the value as printed) among
    the :func:`_full` cells in bold when it is the only one (ties are not bold) and its difference to the baseline
    is :func:`significant`; ``shown`` None: nothing bold (a table whose metric no test compared)."""
    c = study_cells.assign(condition=_condition_label(study_cells))
    c["row"] = _row_label(c)
    c["text"] = [text(r) for _, r in c.iterrows()]
    if shown is not None:
        c["shown"] = [shown(r) for _, r in c.iterrows()]
        for _, col in c[_full(c)].dropna(subset=["shown"]).groupby("condition").shown:
            winners = col.index[col == (col.min() if lower else col.max())]
            if len(winners) == 1 and len(col) > 1 and significant(c.loc[winners[0]]):  # best, and not by chance
                best = winners[0]
                c.loc[best, "text"] = rf"\textbf{{{c.loc[best, 'text']}}}" if tex else f"**{c.loc[best, 'text']}**"
    table = c.pivot_table(index="row", columns="condition", values="text", aggfunc="first", sort=False)
    return table.reindex(index=list(dict.fromkeys(c.row)), columns=list(dict.fromkeys(c.condition))).fillna("–")


def _row_label(c: pd.DataFrame) -> pd.Series:
    """The variant, and where its runs of one condition have several configs (a recipe changed between seeds),
    ``variant @config_key`` for each: cells of different settings are shown apart, never one in place of another."""
    several = c.groupby(["condition", "variant"], dropna=False).config_key.transform(
        lambda k: k.nunique(dropna=False)) > 1
    label = c.variant.map(grid_mod.variant_label)
    label = label.where(~c.variant.str.contains(r"\+budget=", regex=True), _budget_labels(c, label))
    return label.where(~several, label + " @" + c.config_key.fillna("?").astype(str))


def _budget_labels(c: pd.DataFrame, label: pd.Series) -> pd.Series:
    """A FLOP-matched control's label with its ratio and epochs, ``ce+budget=icp-adam (ce, FLOP-matched to
    icp-adam: 3.75×, 615 epochs)``, where they are one across the table's columns (else the compute table gives
    them per condition)."""
    if "compute_ce_epochs_mean" not in c:
        return label
    text = _compute_text(c)
    out = label.copy()
    for variant, rows in c[c.variant.str.contains(r"\+budget=", regex=True)].groupby("variant"):
        shown = {text(r) for _, r in rows.iterrows()} - {"–"}
        if len(shown) == 1:
            epochs, _, ratio = shown.pop().partition(" (")
            ratio = ratio.split("×")[0]
            for i in rows.index:
                out[i] = label[i].removesuffix(")") + (f": {ratio}×, {epochs} epochs)" if ratio else f": {epochs} epochs)")
    return out


def _p_text(label: str, p: float, tex: bool) -> str:
    """``p=0.035``; below 0.001 ``p < 0.001``, never ``p=0.000``."""
    return f"{label} {'$<$' if tex else '<'} 0.001" if p < 0.001 else f"{label}={p:.3f}"


TEST_NAMES = {"t": "t-test p", "sign-flip": "sign-flip p"}


def _test_text(row, tex: bool) -> str:
    """``n=3, t-test p=0.035, Holm p=0.070``: the pairs, the test that gave p (a paired t-test from three pairs
    with a spread; else the exact sign-flip p, at least 2 / 2ⁿ) and Holm's adjustment over the table's family."""
    n = f"n={int(row['pairs'])}"
    if row["p_value"] != row["p_value"]:
        return f"{n}, no test"
    out = f"{n}, {_p_text(TEST_NAMES.get(row.get('test'), 'p'), row['p_value'], tex)}"
    return out + (f", {_p_text('Holm p', row['p_holm'], tex)}" if row.get("p_holm") == row.get("p_holm") else "")


def _refinement_text(row) -> str:
    """``9.0e-03 [1.4e-03, 3.6e-03, 6.9e-03]``: the cell's mean input shift and feature MSE per tap."""
    taps = [row[c] for c in sorted(k for k in row.index if k.startswith("feature_mse.")) if row[c] == row[c]]
    shift = row.get("input_shift", math.nan)
    text = "–" if shift != shift else f"{shift:.1e}"
    return text + (f" [{', '.join(f'{v:.1e}' for v in taps)}]" if taps else "")


def _delta_text(row, tex: bool) -> str:
    """``+3.00 [+0.52, +5.48] (n=3, t-test p=0.035, Holm p=0.070)``: mean paired difference, its 95 % interval,
    pairs and test; ``−1.70, every pair alike (n=2, sign-flip p=0.500, …)`` when all pairs differ by the same
    amount (an interval of one point would claim a precision that no spread showed)."""
    if row["variant"] == row["baseline"] or row["delta"] != row["delta"]:
        return "–"
    scale = 1.0 if row["delta_of"] in RAW else 100.0
    if str(row.get("constant")) == "True" and row["pairs"] > 1:
        ci = ", every pair alike"
    elif row["ci_low"] != row["ci_low"]:
        ci = ""
    else:
        ci = f" [{row['ci_low'] * scale:+.2f}, {row['ci_high'] * scale:+.2f}]"
    return f"{row['delta'] * scale:+.2f}{ci} ({_test_text(row, tex)})"


def _shown_delta(row) -> float:
    return math.nan if row["variant"] == row["baseline"] else _shown(row["delta"], row["delta_of"])


def _fid_kind(features: str) -> str:
    """A record's ``fid_features`` as the kind of FID it makes: ``inception`` or ``classifier``."""
    return "inception" if str(features).startswith("inception") else "classifier"


def _fid_caption(study_cells: pd.DataFrame) -> str:
    """What the study's FIDs can be compared with, from the feature networks its runs name."""
    kinds = set(",".join(study_cells.get("fid_features", pd.Series(dtype=str)).fillna("")).split(",")) - {""}
    if kinds == {"inception"}:
        return "features: Inception-v3 (torch-fidelity), as published FIDs"
    if len(kinds) > 1:
        return "features: MIXED networks across runs (Inception and classifier): these FIDs do not compare"
    return "features: the dataset's ce ResNet-20, so it compares runs of this project only"


def _cost_table(study_cells: pd.DataFrame, baseline: str) -> tuple[str, pd.DataFrame]:
    """The cost of each variant over the study: images/s over its complete runs in every condition (total images ÷
    total training time), its ratio to the baseline's, hours and attempts summed over every run with a record, and
    for a method that needs a teacher (AI-KD) the GPU-hours of the teacher runs it used."""
    cost = study_cells.groupby("variant", sort=False).agg(
        method=("method", "first"), train_images=("train_images", "sum"), train_time_s=("train_time_s", "sum"),
        gpu_hours=("gpu_hours", "sum"), hours=("hours", "sum"), teacher_gpu_hours=("teacher_gpu_hours", "sum"),
        attempts=("attempts", "sum"), runs=("n", "sum"), devices=("devices", "first"))
    rate = cost.train_images / cost.train_time_s.where(cost.train_time_s > 0)
    speed = rate / rate.get(baseline, math.nan)
    teacher = [f"{h:.2f}" if m in grid_mod.TEACHER_METHODS else "–"
               for m, h in zip(cost.method, cost.teacher_gpu_hours)]
    text = pd.DataFrame({
        "images/s": rate.map(lambda v: "–" if v != v else f"{v:,.0f}"),
        f"× {baseline} speed": speed.map(lambda v: "–" if v != v else f"{v:.2f}"),
        "GPU-hours": cost.gpu_hours.map(lambda v: f"{v:.2f}"),
        "device-hours": cost.hours.map(lambda v: f"{v:.2f}"),
        "teacher GPU-hours": pd.Series(teacher, index=cost.index),
        "attempts": cost.attempts.astype(int).astype(str),
        "runs": cost.runs.astype(int).astype(str), "devices": cost.devices.fillna("")})
    text.index = text.index.map(grid_mod.variant_label)
    title = (f"Cost: training images/s over the study's complete runs (all conditions pooled: total images / total "
             f"training time), its ratio to {baseline}; GPU-, device- and teacher GPU-hours and attempts summed over "
             "every attempt of every run with a record (failed, diverged and requeued ones included)")
    return title, text


def sections(study_cells: pd.DataFrame, tex: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """The tables of one study, each (title, variants × conditions of text)."""
    cell = lambda m: (lambda r: _cell_text(r, m, tex))  # noqa: E731
    mean = lambda m: (lambda r: _shown(r[f"{m}_mean"], m))  # noqa: E731
    baseline = study_cells.baseline.iloc[0] if len(study_cells) else "ce"
    delta = lambda r: _delta_text(r, tex)  # noqa: E731
    family = ("Holm's family: the comparisons with the baseline in one column (one condition) of this study's table; "
              f"bold: the one best full cell of a column, only where its Holm-adjusted difference to {baseline} is "
              f"significant at {ALPHA:g}")
    test = ("seeds paired: mean [95 % t interval] (n pairs, the two-sided paired t-test p from 3 pairs with a "
            "spread, else the exact sign-flip p, never below 2/2ⁿ; Holm-adjusted p); " + family)
    if (study_cells.model.map(kind_of) == "generative").all():
        metrics = [  # (title, metric, lower is better)
            ("Test SSIM (%) of reconstructions at the last epoch: mean ± std over seeds (n)", "ssim", False),
            (f"FID of test reconstructions (lower is better; {_fid_caption(study_cells)})", "fid_recon", True),
            ("FID of prior samples against the test images (lower is better; same features)", "fid_prior", True),
            ("Test ELBO per image (nats, up to a constant; higher is better)", "elbo", False)]
        compared = "SSIM"
    else:
        metrics = [(f"Test top-1 (%) at the last epoch: mean ± std over seeds (n); {family}", "top1", False),
                   ("Validation top-1 (%) at the last epoch (the split every choice is made on: 10 % of the training "
                    "pool, stratified, clean)", "val_top1", False),
                   ("Test top-1 (%) at the epoch of best validation top-1", "best_top1", False),
                   ("Test macro-F1 (%) at the last epoch", "macro_f1", False),
                   ("Test ECE (%, lower is better) at the last epoch", "ece", True)]
        compared = "Top-1"
    headline = metrics[0][1]
    out = [(title, _pivot(study_cells, cell(m), mean(m) if m == headline else None, lower, tex))
           for title, m, lower in metrics]
    out.append((f"{compared} difference to {baseline} (percentage points; {test})",
                _pivot(study_cells, delta, _shown_delta, False, tex)))
    if "input_shift" in study_cells and study_cells.input_shift.notna().any():
        moved = _pivot(study_cells, _refinement_text, None, False, tex)
        out.append(("How far the refinement moved at the last epoch (ICP variants, mean over seeds): mean |x_K − x| "
                    "in normalised input units; in brackets the feature MSE between clean and refined input per tap, "
                    "shallow to deep", moved[(moved != "–").any(axis=1)]))
    if (study_cells.model.map(kind_of) == "classifier").all() and study_cells.compute_ce_epochs_mean.notna().any():
        out.append((f"Training compute per run in {baseline} epochs of its condition (each method's declared FLOPs "
                    "per step, icp/methods/options.py, summed over its epochs), and its ratio to "
                    f"{baseline}'s: a FLOP-matched control's row gives the epochs and ratio it was given",
                    _pivot(study_cells, _compute_text(study_cells), None, False, tex)))
    return [*out, _cost_table(study_cells, baseline)]


def _compute_text(study_cells: pd.DataFrame):
    """``615 (3.75× ce)``: a cell's training compute in baseline epochs and its ratio to the baseline cell of the
    same condition and setting."""
    base = {}
    for _, r in study_cells[study_cells.variant == study_cells.baseline].iterrows():
        base[tuple(r[k] for k in (*CONDITION, "setting_key"))] = r["compute_ce_epochs_mean"]

    def text(r) -> str:
        c = r["compute_ce_epochs_mean"]
        if c != c:
            return "–"
        b = base.get(tuple(r[k] for k in (*CONDITION, "setting_key")), math.nan)
        return f"{c:,.0f}" + ("" if b != b or not b else f" ({c / b:.2f}× {r['baseline']})")
    return text


def study_sections(study_cells: pd.DataFrame, tex: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """:func:`sections` per model kind: the generative study also holds the classifier runs that give FID its
    features, tabulated apart, after the VAE tables."""
    kinds = study_cells.model.map(kind_of)
    parts = [(k, study_cells[kinds == k]) for k in ("generative", "classifier") if (kinds == k).any()]
    if len(parts) < 2:
        return sections(study_cells, tex)
    return [(title if k == "generative" else f"Classifiers of this study (FID's feature networks): {title}", table)
            for k, part in parts for title, table in sections(part, tex)]


def _md_table(table: pd.DataFrame) -> str:
    head = ["variant", *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in table.iterrows():
        lines.append("| " + " | ".join([str(variant), *map(str, row.values)]) + " |")
    return "\n".join(lines)


def _tex_escape(text: str) -> str:
    if text.startswith("\\textbf{") or "$" in text:
        return text.replace("%", r"\%").replace("_", r"\_")
    return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
            .replace("#", r"\#").replace("±", r"$\pm$").replace("×", r"$\times$").replace("–", "--")
            .replace("ⁿ", r"$^n$").replace("−", "-").replace("α", r"$\alpha$"))


def _tex_table(title: str, table: pd.DataFrame) -> str:
    cols = "l" + "r" * len(table.columns)
    head = " & ".join(["variant", *(_tex_escape(str(c)) for c in table.columns)]) + r" \\"
    body = [" & ".join([_tex_escape(str(v)), *(_tex_escape(str(x)) for x in row.values)]) + r" \\"
            for v, row in table.iterrows()]
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\small", rf"\caption{{{_tex_escape(title)}}}",
                      rf"\begin{{tabular}}{{{cols}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}", ""])


# the metrics ``icp report`` shows, per model kind (:func:`kind_of`)
REPORT_METRICS = {"classifier": ("top1", "macro_f1", "ece"), "generative": ("ssim", "fid_recon", "elbo")}


def flat_markdown(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> str:
    """One row per cell of :func:`cells` (``icp report``): its factors, n, the metrics as mean ± std (in %) and the
    difference to the baseline with its interval and p-values, headed by the metric it compares (top-1 for a
    classifier, SSIM for the VAE: :data:`BASELINE`). The metrics default to those of the model kinds in the table
    (:data:`REPORT_METRICS`). Where one condition and variant hold runs of several configs (other than by seed),
    each config is its own row and a ``config`` column names its key."""
    if table.empty:
        return "(no runs)"
    kinds = [k for k in REPORT_METRICS if k in set(table.model.map(kind_of))]
    metrics = list(metrics or dict.fromkeys(m for k in kinds for m in REPORT_METRICS[k]))
    compared = " / ".join(dict.fromkeys(BASELINE[k][1] for k in kinds))
    keys = [k for k in (*CONDITION, "variant", "epochs") if k in table]
    if table.groupby(keys, dropna=False).config_key.nunique(dropna=False).gt(1).any():
        keys.append("config_key")
    head = [*(("config" if k == "config_key" else k) for k in keys), "n", *metrics,
            f"Δ {compared} vs baseline [95 % CI] (pairs, p, Holm p)"]
    def row(cells) -> str:  # a "|" inside a cell is escaped, so every row has the header's columns
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(head), "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append(row([*(r[k] for k in keys), r["n"], *(_cell_text(r, m, False).rsplit(" (", 1)[0] for m in metrics),
                          _delta_text(r, False)]))
    return "\n".join(lines)


def not_in_table(runs: pd.DataFrame) -> list[str]:
    """One line per run that is not averaged in: missing, in flight, failed, diverged."""
    lines = []
    for _, r in runs[runs.status != "complete"].iterrows():
        err = r.get("error")
        lines.append(f"{r.status}: {r.run_id}" + (f" ({err})" if isinstance(err, str) and err else ""))
    return lines


def _html_text(text: str) -> str:
    """A line of the markdown tables as HTML: escaped, with their ``**bold**`` and ```code``` marks."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{_html_text(str(c))}</th>" for c in ["variant", *table.columns])
    rows = ["<tr>" + "".join(f"<td>{_html_text(str(v))}</td>" for v in [variant, *row.values]) + "</tr>"
            for variant, row in table.iterrows()]
    return "\n".join(["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>"])


HTML_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em;max-width:80em}"
              "h1{font-size:1.4em}h2{font-size:1.05em;margin-top:1.6em}"
              "table{border-collapse:collapse}th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}"
              "th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}")


def write_tables(study: str, runs: pd.DataFrame, all_cells: pd.DataFrame, out_dir: str | Path,
                 grid=None) -> list[Path]:
    """``<study>.csv``, ``.md``, ``.tex`` and ``.html`` for the runs of one study (``runs``: its rows of
    :func:`runs_frame`); the ``.html`` holds what the ``.md`` does, as a page of its own (no scripts, no links).
    With ``grid``, a study with tuned cells (:mod:`icp.tuning`) gets the ``Equal tuning`` section
    (:mod:`icp.tuning_table`); its tuning trials are that section's, not rows of the other tables (the ``.csv``
    keeps every cell)."""
    from icp import tuning_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = runs[[*CONDITION, "variant"]].drop_duplicates()
    all_study_cells = all_cells.merge(keys, on=[*CONDITION, "variant"])
    paths = [out_dir / f"{study}.{ext}" for ext in ("csv", "md", "tex", "html")]
    _atomic_text(with_holm(all_study_cells, CONDITION).to_csv(index=False), paths[0])
    trial_runs = runs[tuning_table.is_trial(runs.variant)]
    runs = runs[~tuning_table.is_trial(runs.variant)]
    study_cells = all_study_cells[~tuning_table.is_trial(all_study_cells.variant)]
    study_cells = with_holm(study_cells, CONDITION)  # Holm's family: this study's comparisons, per condition
    missing = not_in_table(runs)
    title = f"Study `{study}`"
    intro = (f"{int(study_cells.n.sum())} complete runs in {len(study_cells)} cells; "
             f"{len(missing)} runs not averaged in (listed at the end). A cell with runs left out says how many of "
             "how many it averages, and why. Bold: the one best value of a column among the cells that average all "
             f"of the study's seeds (ties: none), only where its Holm-adjusted difference to the baseline is "
             f"significant at {ALPHA:g} (Holm's family: the comparisons of that column, one condition of this study).")
    tuned = []
    if grid is not None and any(c.study == study for c in grid.tuned):
        tuned = tuning_table.sections(study, all_study_cells, pd.concat([runs, trial_runs]), grid)
        intro += (f" Its {len(trial_runs)} tuning trial runs ({int((trial_runs.status == 'complete').sum())} "
                  "complete) are in the Equal tuning section only.")
    sections = [*tuned, *study_sections(study_cells)]
    md = [f"# {title}", "", intro, ""]
    page = ["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">',
            f"<title>{html.escape(f'Study {study}')}</title>", f"<style>{HTML_STYLE}</style></head>", "<body>",
            f"<h1>{_html_text(title)}</h1>", f"<p>{_html_text(intro)}</p>"]
    for heading, table in sections:
        md += [f"## {heading}", "", _md_table(table), ""]
        page += [f"<h2>{_html_text(heading)}</h2>", _html_table(table)]
    if missing:
        md += ["## Runs not in the tables", "", *(f"- {line}" for line in missing), ""]
        page += ["<h2>Runs not in the tables</h2>", "<ul>", *(f"<li>{_html_text(line)}</li>" for line in missing),
                 "</ul>"]
    _atomic_text("\n".join(md), paths[1])
    tex = [f"% Study {study}: generated by icp.aggregate from run records; needs \\usepackage{{booktabs}}", ""]
    tex_tuned = tuning_table.sections(study, all_study_cells, pd.concat([runs, trial_runs]), grid, tex=True) \
        if tuned else []
    for heading, table in [*tex_tuned, *study_sections(study_cells, tex=True)]:
        tex.append(_tex_table(f"{study}: {heading}", table))
    _atomic_text("\n".join(tex), paths[2])
    _atomic_text("\n".join([*page, "</body>", "</html>", ""]), paths[3])
    return paths


def write_summary(runs: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    _atomic_text(runs.to_csv(index=False), path)
    return path


def study_runs(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    return runs[runs.studies.fillna("").str.split(";").map(lambda s: study in s)]
