"""What the figures share to select and group runs, without matplotlib (the registry imports the figure modules,
and they import this, for the Snakefile's catalogue): the complete runs of a study, the lines and panels they
fall into, each line's n and each epoch's training compute."""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from icp.methods.options import ICP_FAMILY as ICP_METHODS  # ICP and its presets (ifgsm: the destructive one)

# what makes two runs comparable: a figure draws each combination in its own panel, never averaging across them
CONDITION = ("dataset", "model", "scenario", "epochs")
# the panel of the curve figures that put a control beside what it controls: the condition less its training
# length (a compute-matched ce trains longer than the ICP run it judges); each length is a line of its own
PANEL = ("dataset", "model", "scenario")


def complete(runs: pd.DataFrame, study: Optional[str]) -> pd.DataFrame:
    """The complete runs of ``runs`` in ``study`` (None: of any study)."""
    sel = runs[runs.status == "complete"]
    if study is not None:
        # astype(bool): with no complete run the mask is an empty object Series, which pandas takes as columns
        sel = sel[sel.studies.fillna("").str.split(";").map(lambda s: study in s).astype(bool)]
    return sel


def label_n(df: pd.DataFrame, by: str = "variant", at: Optional[Sequence[str] | str] = None,
            names: Optional[dict] = None) -> dict[str, str]:
    """value of ``by`` -> 'name (n=K)', K the number of distinct seeds of that value in ``df``; with ``at``, the
    seeds behind each point (each value of ``at``), written 'n=2–3' where points differ. ``names``: the name of
    each value (default: :func:`icp.naming.variant_label` of it, so that the controls say what they are)."""
    from icp.naming import variant_label

    out = {}
    for v, g in df.groupby(by, sort=True):
        ns = [g.seed.nunique()] if at is None else g.groupby(at).seed.nunique().tolist()
        lo, hi = min(ns), max(ns)
        name = names[v] if names is not None else variant_label(str(v))
        out[v] = f"{name} (n={lo})" if lo == hi else f"{name} (n={lo}–{hi})"
    return out


def with_epochs(ep: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``ep`` (rows of the epochs frame) with each run's training length ``epochs`` from the runs frame."""
    if "epochs" in ep or ep.empty:
        return ep
    return ep.merge(runs[["run_id", "epochs"]].drop_duplicates("run_id"), on="run_id", how="left")


def line_per_length(df: pd.DataFrame, panel: Sequence[str], at: Optional[Sequence[str] | str] = None,
                    epochs_in_name: bool = True) -> pd.DataFrame:
    """``df`` with the columns ``line``, the line each row belongs to in a panel keyed by ``panel`` (which
    leaves out the training length), and ``line_name``, its legend name in that panel.

    A line is a variant, except where the variant's runs at one point (one value of ``at``; the whole panel when
    ``at`` is None) differ in training length: then each length is a line of its own ('VARIANT@E'), so that no
    point averages runs of two conditions. ``epochs_in_name``: the name says the line's training length in its
    panel (the panel's title does not); a line whose points differ in length (few-shot: the length follows the
    shot count) is named without it."""
    from icp.naming import variant_label

    panel, at = list(panel), [at] if isinstance(at, str) else list(at or [])
    lengths = df.groupby([*panel, "variant", *at], dropna=False).epochs.nunique()
    mixed = set(lengths[lengths > 1].index.get_level_values("variant"))
    df = df.reset_index(drop=True)
    df["line"] = [f"{v}@{int(e)}" if v in mixed else v for v, e in zip(df.variant, df.epochs)]
    df["line_name"] = ""
    for _, part in df.groupby([*panel, "line"], sort=False, dropna=False):
        lengths = part.epochs.dropna().unique()
        name = variant_label(str(part.variant.iloc[0]))
        if len(lengths) == 1 and (epochs_in_name or part.line.iloc[0] != part.variant.iloc[0]):
            name += f", {int(lengths[0])} epochs"
        df.loc[part.index, "line_name"] = name
    return df


def with_compute(ep: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``ep`` (rows of the epochs frame, ``epoch`` 1-based) with ``compute``: the training compute of the run
    through the end of that epoch, in ce epochs (:func:`icp.methods.options.epoch_costs` of the run's method,
    options, training length and model, summed over its epochs 1 .. e): a ce epoch costs 1, an ICP epoch after
    warm-up (2K + 4)/3, or the count of results/reference/flops.csv where it differs from the declaration by over
    1 %; a method that starts from a teacher run (AI-KD) starts at that run's training compute
    (:func:`icp.methods.options.teacher_cost`)."""
    from icp.methods.options import epoch_costs, teacher_cost

    cumulative = {}
    for r in runs.drop_duplicates("run_id").itertuples():
        options = json.loads(r.method_options) if isinstance(r.method_options, str) else {}
        model = getattr(r, "model", None)
        model = model if isinstance(model, str) else None
        cumulative[r.run_id] = teacher_cost(r.method, int(r.epochs), model) + np.cumsum(
            epoch_costs(r.method, options, int(r.epochs), model))
    ep = ep.copy()
    ep["compute"] = [float(cumulative[r][int(e) - 1]) if r in cumulative and 0 < int(e) <= len(cumulative[r])
                     else np.nan for r, e in zip(ep.run_id, ep.epoch)]
    return ep


def condition_name(key: dict) -> str:
    """'fashion-mnist / resnet20 / clean, 30 epochs' from the condition's factors present in ``key``."""
    name = " / ".join(str(key[k]) for k in ("dataset", "model", "scenario") if k in key)
    e = key.get("epochs")
    if e is not None and e == e:
        name += f", {int(e)} epochs"
    return name


def split_by(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(factors, rows) per distinct combination of ``keys`` in ``df``, sorted: one panel each."""
    keys = list(keys)
    return [(dict(zip(keys, k if isinstance(k, tuple) else (k,))), part)
            for k, part in df.groupby(keys, sort=True, dropna=False)]


def icp_epochs(runs: pd.DataFrame, epochs: pd.DataFrame, study: str = "main") -> pd.DataFrame:
    """The epoch rows of the complete ICP runs of ``study``, each with its training length."""
    done = complete(runs, study)
    done = done[done.method.isin(ICP_METHODS)]
    return with_epochs(epochs[epochs.run_id.isin(done.run_id)].copy(), done)


def complete_vaes(runs: pd.DataFrame) -> pd.DataFrame:
    """The complete VAE runs of the generative study (not the classifiers that give FID its features)."""
    from icp.results.frames import kind_of

    done = complete(runs, "generative")
    return done[done.model.map(kind_of) == "generative"]


def vae_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and variant of the generative study, its complete VAE run of the lowest seed."""
    return complete_vaes(runs).sort_values("seed", kind="stable").drop_duplicates(["dataset", "variant"])


def vae_checkpoints(grid) -> list:
    """The grid runs that :func:`vae_runs` picks from the records: per dataset and variant of the generative
    study, the VAE run of the lowest seed (Snakemake inputs of the figures drawn from their models)."""
    if "generative" not in grid.studies:
        return []
    from icp.results.frames import kind_of

    chosen = {}
    for run in sorted(grid.select("generative"), key=lambda r: r.seed):
        if kind_of(run.model) == "generative":
            chosen.setdefault((run.dataset, run.run_id.split("/")[3]), run)
    return list(chosen.values())
