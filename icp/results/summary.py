"""Summary: what ``icp summarize`` writes for DVC and the later steps, from a grid's run records.

:func:`summarize` writes ``summary.csv`` (one row per grid run, :func:`icp.results.frames.runs_frame`),
``epochs.csv``, ``metrics.json`` (per study, condition and variant the headline's mean, std, n, difference to the
baseline and p: :func:`metrics_tree`), ``dvc/<variant>.json`` (DVC's metric: the means alone, in the tables'
units, :func:`headline_files`) and ``curves/<metric>/<condition>.csv`` (DVC's plots, :func:`curves`, named by
:func:`curve_name`).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

import pandas as pd

from icp import atomic
from icp.results.cells import cells
from icp.results.frames import BASELINE, CONDITION, epochs_frame, kind_of, runs_frame, study_runs, write_summary
from icp.results.text import scale_digits, shown
from icp.results.tuning import is_trial


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


def headline_key(variant: str) -> str:
    """A variant's name in DVC's metric: a tuned final ``ce+tuned=2`` is ``ce+tuned`` (which trial won is the
    tables' business; the file a row of ``dvc metrics show`` stays one across selections)."""
    return re.sub(r"\+tuned=\d+$", "+tuned", variant)


def headline_files(tree: dict) -> dict[str, dict[str, float]]:
    """DVC's metric (``dvc metrics show``: a row per variant, a column per study, narrow enough for 80 columns):
    ``{variant: {column: mean}}`` from :func:`metrics_tree`, each the variant's last-epoch mean of the condition's
    headline metric (test top-1 for a classifier, SSIM for the VAE) in the tables' units and digits (72.7 for
    0.727). The column is the study, or, where the study has several conditions, ``study dataset/model/scenario``
    with the parts that differ among them. A condition holding one variant alone where the study compares
    variants in others (the VAE study's FID feature run, a ``ce`` top-1 among SSIMs) is left out, as is a variant
    without a complete run. Std, n, differences and p-values stay in ``metrics.json``."""
    files: dict = {}
    for study, conditions in sorted(tree.items()):
        if study == "runs":
            continue
        kept = {tuple(c.split("/")): v for c, v in conditions.items() if len(v) > 1} or {
            tuple(c.split("/")): v for c, v in conditions.items()}
        differs = [i for i in range(3) if len({c[i] for c in kept}) > 1]
        for condition, variants in kept.items():
            column = " ".join([study, "/".join(condition[i] for i in differs)]) if differs else study
            for variant, leaf in variants.items():
                means = [k for k in leaf if k.endswith("_mean")]
                if means:
                    metric = means[0].removesuffix("_mean")
                    files.setdefault(headline_key(variant), {})[column] = shown(leaf[means[0]], metric)
    return files


def headline_path(out_dir: str | Path, variant: str) -> Path:
    """The metric file of a variant (:func:`headline_files`): ``<out_dir>/dvc/<variant>.json`` (a short folder:
    ``dvc metrics show``'s widest line, the path and the four laptop studies, stays within 80 columns)."""
    return Path(out_dir) / "dvc" / (re.sub(r"[^\w.+=@-]", "_", variant) + ".json")


def curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Learning curves for DVC's plots: one file per condition, ``<metric>/<dataset>_<model>_<scenario>``, where
    ``metric`` is the condition's headline (:data:`BASELINE`: test top-1 for classifiers, SSIM for the VAE); in
    long format, one row per variant and epoch: ``epoch, variant, <metric>_mean, <metric>_std, n`` (mean and std
    over the complete runs that have the metric at that epoch, and their number). dvc.yaml draws each file as one
    plot with a line per variant (template ``.dvc/plots/variants.json``). Means and stds in the tables' units
    (top-1 in %)."""
    out = {}
    if epochs.empty:  # no run has a readable record yet
        return out
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
        scale, _ = scale_digits(metric)  # in the tables' units: top-1 in %, as every other view shows it
        frame[[f"{metric}_mean", f"{metric}_std"]] *= scale
        out[curve_name(*map(str, key))] = frame[columns].round(4).reset_index(drop=True)
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
    the headline's mean, std, n, difference to the baseline and p: :func:`metrics_tree`), ``dvc/<variant>.json``
    (DVC's metric: the means alone, in the tables' units, :func:`headline_files`) and ``curves/<metric>/<condition>.csv``
    (DVC's plots, :func:`curves`) under ``out_dir``."""
    out_dir = Path(out_dir)
    runs = runs_frame(grid, runs_dir=runs_dir)
    paths = {"summary": write_summary(runs, out_dir / "summary.csv"), "epochs": out_dir / "epochs.csv",
             "metrics": out_dir / "metrics.json", "headline": out_dir / "dvc", "curves": out_dir / "curves"}
    epochs = epochs_frame(runs)
    atomic.write(epochs.to_csv(index=False), paths["epochs"], mkdir=True)
    tree = metrics_tree(cells(runs), runs)
    atomic.write(json.dumps(tree, indent=1, sort_keys=True), paths["metrics"], mkdir=True)
    files = {headline_path(out_dir, v): row for v, row in headline_files(tree).items()}
    for stale in set(paths["headline"].glob("*.json")) - set(files):  # a variant the grid no longer has
        stale.unlink()
    for path, row in files.items():
        atomic.write(json.dumps(row, indent=1, sort_keys=True), path, mkdir=True)
    paths["headline"].mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths["curves"], ignore_errors=True)
    for name, frame in curves(epochs).items():
        atomic.write(frame.to_csv(index=False), paths["curves"] / f"{name}.csv", mkdir=True)
    paths["curves"].mkdir(parents=True, exist_ok=True)
    return paths
