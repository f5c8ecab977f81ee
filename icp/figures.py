"""The paper's figures, from the run records (through ``summary.csv`` and ``epochs.csv`` of :mod:`icp.aggregate`)
and, for the perturbation figure, one trained checkpoint. Each is written as ``<name>.png`` and ``<name>.pdf``.

What each figure shows is its caption, given where it is registered (:func:`figure`) and kept in
:data:`CAPTIONS`; the Snakemake report (``snakemake --report``) shows it under the figure, and the list at the
end of this docstring repeats it with the study each figure needs.

A *condition* is a dataset, model, scenario and number of training epochs (:data:`CONDITION`): figures never
average across conditions. The figures that compare variants (``learning_curves``, ``compute``, ``noise``,
``fewshot``) draw one panel per dataset × model × scenario (:data:`PANEL`; in ``noise`` and ``fewshot`` the
scenario is the x-axis) and a line per variant *and training length*: a control that trains for more epochs (the
compute-matched ``ce+budget=...``) sits beside the run it judges, each line's legend name gives its length, and
a variant with runs of two lengths draws two lines, never their mean; few-shot shot counts, whose fixed step
budget trains each its own epochs, are one line with the epochs under each tick. The other figures draw one
panel per condition (one Axes), titled with it. Each panel has its own legend, below the Axes (never over the
data or the y-label), whose labels give that panel's ``n`` (distinct complete seeds of the line in that panel;
``n=2–3`` where the points of one curve rest on different numbers of seeds). Suptitles name the study and what
is averaged; axes carry units. A figure whose study has no complete run yet says so on an empty canvas instead
of failing.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from icp.figure_data import refines as _refines  # a constructive ICP run that refines its input
from icp.methods.options import ICP_FAMILY as ICP_METHODS  # ICP and its presets (ifgsm: the destructive one)

FIGURES: dict[str, tuple[str, Callable]] = {}  # name -> (study it needs, function)
# name -> what the figure shows, in reStructuredText: the one place of each caption (docstring, report)
CAPTIONS: dict[str, str] = {}
# what makes two runs comparable: a figure draws each combination in its own panel, never averaging across them
CONDITION = ("dataset", "model", "scenario", "epochs")


def _libs():
    """matplotlib (Agg) and seaborn, imported on first use: the Snakefile imports this module for its catalogue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def figure(name: str, study: str, caption: str):
    """Register a figure: ``name`` (its files' stem), the study whose runs it draws and its caption (what it
    shows, reStructuredText, one paragraph)."""
    def register(fn):
        FIGURES[name] = (study, fn)
        CAPTIONS[name] = " ".join(caption.split())
        fn.__doc__ = fn.__doc__ or CAPTIONS[name]  # what the figure shows, also in help()
        return fn
    return register


def available(studies) -> list[str]:
    """The figures a grid with these studies yields."""
    return [name for name, (study, _) in FIGURES.items() if study in studies]


def unknown_studies(studies) -> list[str]:
    """A warning line for each study name that no figure draws (a typo such as ``nosiy``): its tables are made,
    its figures never are."""
    from icp.config import did_you_mean

    drawn = sorted({study for study, _ in FIGURES.values()})
    known = sorted({*drawn, *TABLE_ONLY})
    return [f"warning: unknown study '{s}': no figure draws it, its tables are made (studies with figures: "
            f"{', '.join(drawn)}; tables only: {', '.join(sorted(TABLE_ONLY))})"
            f"{hint if (hint := did_you_mean(s, known)).startswith('; did') else ''}"
            for s in studies if s not in known]


# studies that are tables only (no figure draws them), and why
TABLE_ONLY = {"authors": "the ICP authors' own recipe beside ours: a table",
              "ablations": "ICP's options one at a time: a table (its runs also feed the schedule figures)"}


def _complete(runs: pd.DataFrame, study: Optional[str]) -> pd.DataFrame:
    sel = runs[runs.status == "complete"]
    if study is not None:
        # astype(bool): with no complete run the mask is an empty object Series, which pandas takes as columns
        sel = sel[sel.studies.fillna("").str.split(";").map(lambda s: study in s).astype(bool)]
    return sel


def _label_n(df: pd.DataFrame, by: str = "variant", at: Optional[Sequence[str] | str] = None,
             names: Optional[dict] = None) -> dict[str, str]:
    """value of ``by`` -> 'name (n=K)', K the number of distinct seeds of that value in ``df``; with ``at``, the
    seeds behind each point (each value of ``at``), written 'n=2–3' where points differ. ``names``: the name of
    each value (default: :func:`icp.grid.variant_label` of it, so that the controls say what they are)."""
    from icp.grid import variant_label

    out = {}
    for v, g in df.groupby(by, sort=True):
        ns = [g.seed.nunique()] if at is None else g.groupby(at).seed.nunique().tolist()
        lo, hi = min(ns), max(ns)
        name = names[v] if names is not None else variant_label(str(v))
        out[v] = f"{name} (n={lo})" if lo == hi else f"{name} (n={lo}–{hi})"
    return out


def _empty(title: str, why: str):
    plt, _ = _libs()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    ax.set_title(title)
    return fig


def _with_epochs(ep: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``ep`` (rows of the epochs frame) with each run's training length ``epochs`` from the runs frame."""
    if "epochs" in ep or ep.empty:
        return ep
    return ep.merge(runs[["run_id", "epochs"]].drop_duplicates("run_id"), on="run_id", how="left")


def _line_per_length(df: pd.DataFrame, panel: Sequence[str], at: Optional[Sequence[str] | str] = None,
                     epochs_in_name: bool = True) -> pd.DataFrame:
    """``df`` with the columns ``line``, the line each row belongs to in a panel keyed by ``panel`` (which
    leaves out the training length), and ``line_name``, its legend name in that panel.

    A line is a variant, except where the variant's runs at one point (one value of ``at``; the whole panel when
    ``at`` is None) differ in training length: then each length is a line of its own ('VARIANT@E'), so that no
    point averages runs of two conditions. ``epochs_in_name``: the name says the line's training length in its
    panel (the panel's title does not); a line whose points differ in length (few-shot: the length follows the
    shot count) is named without it."""
    from icp.grid import variant_label

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


def _with_compute(ep: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``ep`` (rows of the epochs frame, ``epoch`` 1-based) with ``compute``: the training compute of the run
    through the end of that epoch, in ce epochs (:func:`icp.methods.options.epoch_costs` of the run's method,
    options and training length, summed over its epochs 1 .. e): a ce epoch costs 1, an ICP epoch after warm-up
    (2K + 4)/3."""
    from icp.methods.options import epoch_costs

    cumulative = {}
    for r in runs.drop_duplicates("run_id").itertuples():
        options = json.loads(r.method_options) if isinstance(r.method_options, str) else {}
        cumulative[r.run_id] = np.cumsum(epoch_costs(r.method, options, int(r.epochs)))
    ep = ep.copy()
    ep["compute"] = [float(cumulative[r][int(e) - 1]) if r in cumulative and 0 < int(e) <= len(cumulative[r])
                     else np.nan for r, e in zip(ep.run_id, ep.epoch)]
    return ep


def _condition_name(key: dict) -> str:
    """'fashion-mnist / resnet20 / clean, 30 epochs' from the condition's factors present in ``key``."""
    name = " / ".join(str(key[k]) for k in ("dataset", "model", "scenario") if k in key)
    e = key.get("epochs")
    if e is not None and e == e:
        name += f", {int(e)} epochs"
    return name


def _by(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(factors, rows) per distinct combination of ``keys`` in ``df``, sorted: one panel each."""
    keys = list(keys)
    return [(dict(zip(keys, k if isinstance(k, tuple) else (k,))), part)
            for k, part in df.groupby(keys, sort=True, dropna=False)]


def _colours(values) -> dict:
    """One colour per value (a variant keeps its colour in every panel of a figure)."""
    _, sns = _libs()
    values = sorted(set(values), key=str)
    return dict(zip(values, sns.color_palette(n_colors=max(len(values), 1))))


def _grid(panels: list, title: str, ncols: int = 3, size: tuple[float, float] = (4.6, 3.4)):
    """The one layout of the curve figures: one Axes per panel, ``ncols`` to a row. ``panels`` holds
    ``(panel title, draw(ax))`` pairs, or None for an empty slot (to start a new row)."""
    plt, _ = _libs()
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= len(panels) or panels[i] is None:
            fig.delaxes(ax)
            continue
        name, draw = panels[i]
        draw(ax)
        ax.set_title(name, fontsize=9)
        _legend_below(ax)
    width = max(40, int(size[0] * ncols * 13))  # characters of 10 pt text across the panels: wrap, not widen
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=10)
    return fig


def _lines(ax, part: pd.DataFrame, x: str, y: str, colours: dict, hue: str = "variant", legend: str = "variant",
           at: Optional[Sequence[str] | str] = None, style: Optional[str] = None, errorbar="sd",
           marker: Optional[str] = "o", names: Optional[dict] = None):
    """``part`` (one panel's rows) as lines of ``y`` over ``x``, one per ``hue`` value, mean and ``errorbar``
    over seeds; the legend, below this Axes, gives each line this panel's n (see :func:`_label_n`; ``names``:
    each ``hue`` value's name in it)."""
    _, sns = _libs()
    if names is None and hue == "line" and "line_name" in part:  # :func:`_line_per_length`'s lines
        names = dict(zip(part.line, part.line_name))
    labels = _label_n(part, hue, at, names)
    name = f"{legend} (n seeds)"
    data = part.assign(**{name: part[hue].map(labels)})
    order = [labels[v] for v in labels]
    if style is None and len(order) > 1:
        # each line its own dashes and marker as well as colour: a line that lies exactly on another (an α-only
        # control on the ICP run it controls) still shows under it
        sns.lineplot(data=data, x=x, y=y, hue=name, hue_order=order, palette={labels[v]: colours[v] for v in labels},
                     style=name, style_order=order, dashes=True, markers=True if marker else False,
                     errorbar=errorbar, ax=ax)
    else:
        sns.lineplot(data=data, x=x, y=y, hue=name, hue_order=order,
                     palette={labels[v]: colours[v] for v in labels}, style=style, marker=marker, errorbar=errorbar,
                     ax=ax)
    _small_legend(ax, None if style else name)
    ax.set(xlabel=x, ylabel=y)


def _small_legend(ax, title: Optional[str]):
    """Redraw seaborn's legend of ``ax`` in a small font (:func:`_grid` then puts it below the Axes)."""
    old = ax.get_legend()
    if old is None:
        return
    ax.legend(old.legend_handles, [t.get_text() for t in old.texts], title=title, fontsize=7, title_fontsize=7,
              framealpha=0.8)


def _legend_below(ax):
    """Move the legend of ``ax`` below the Axes, under its tick labels and x-label: never over the data or the
    y-label. Placed in points from the Axes' bottom edge, where the tick labels and the x-label sit whatever size
    the layout gives the Axes (constrained layout then makes room for it)."""
    from matplotlib.transforms import offset_copy

    legend = ax.get_legend()
    if legend is None:
        return
    ticks = ax.xaxis.get_ticklabels()
    tick_lines = max([1 + t.get_text().count("\n") for t in ticks if t.get_visible()] or [0])
    label_lines = 1 + ax.get_xlabel().count("\n") if ax.get_xlabel() else 0
    below = (max([t.get_size() for t in ticks] or [10]) * 1.2 * tick_lines
             + ax.xaxis.label.get_size() * 1.2 * label_lines + 12)  # the pads: ticks, tick labels, x-label
    legend.set_loc("upper center")
    legend.set_bbox_to_anchor((0.5, 0.0), transform=offset_copy(ax.transAxes, fig=ax.figure, y=-below,
                                                                 units="points"))


# ------------------------------------------------------------------------------------------ figures
def _curves(ep: pd.DataFrame, y: str, title: str, keys: Sequence[str] = CONDITION, log: bool = False,
            ylabel: Optional[str] = None):
    """One panel per condition of ``y`` vs epoch, a line (mean ± sd over seeds) per variant."""
    colours = _colours(ep.variant)

    def draw(part):
        def on(ax):
            _lines(ax, part, "epoch", y, colours)
            if log:
                ax.set_yscale("log")
            ax.set(xlabel="epoch", ylabel=ylabel or y)
        return on

    return _grid([(_condition_name(key), draw(part)) for key, part in _by(ep, keys)], title)


# the panel of the curve figures that put a control beside what it controls: the condition less its training
# length (a compute-matched ce trains longer than the ICP run it judges); each length is a line of its own
PANEL = ("dataset", "model", "scenario")


def _marker(df: pd.DataFrame) -> Optional[str]:
    """A marker per epoch where the runs are short enough for markers to be told apart."""
    return "o" if df.epochs.max() <= 40 else None


def _top1_panels(ep: pd.DataFrame, x: str, title: str, xlim: dict):
    """Test top-1 (%) against column ``x`` of per-epoch rows ``ep``: one panel per dataset, model and scenario,
    a line per variant and training length (mean ± sd over seeds), the x axis limited by ``xlim``."""
    ep["test top-1 (%)"] = ep.test_top1 * 100
    ep = _line_per_length(ep, PANEL)
    colours = _colours(ep.line)

    def draw(part):
        def on(ax):
            _lines(ax, part, x, "test top-1 (%)", colours, hue="line", marker=_marker(part))
            ax.set_xlim(**xlim)
        return on

    return _grid([(_condition_name(key), draw(part)) for key, part in _by(ep, PANEL)], title)


@figure("learning_curves", "main",
        "Test top-1 vs training progress (epoch ÷ the run's epochs, %), mean ± sd band over seeds, a line per "
        "variant and training length; one panel per dataset, model and scenario, so that the compute-matched "
        "ce (``ce+budget=...``, trained for more epochs) and the α-only control (``icp+steps=0``) sit beside the "
        "ICP run they judge. Progress rather than epochs puts runs of different lengths on one axis; the "
        "``compute`` figure draws the same runs against their training compute.")
def learning_curves(runs, epochs, ctx):
    done = _complete(runs, "main")
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    title = ("Study main: test top-1 vs training progress (mean ± sd over seeds; n = seeds per line in each "
             "panel; each line's training length in its legend)")
    if ep.empty:
        return _empty(title, "no complete run of study main yet")
    ep = _with_epochs(ep, done)
    x = "training progress (% of the run's epochs)"
    ep[x] = 100 * ep.epoch / ep.epochs
    return _top1_panels(ep, x, title, dict(left=0, right=102))


def compute_curves(runs, epochs, study: str, methods: Optional[Sequence[str]] = (*ICP_METHODS, "ce")):
    """Test top-1 of the complete runs of ``study`` (of ``methods``; None: all) against their training compute
    through each epoch (:func:`_with_compute`): one panel per dataset, model and scenario, a line per variant
    and training length (mean ± sd over seeds)."""
    done = _complete(runs, study)
    if methods is not None:
        done = done[done.method.isin(methods)]
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    title = (f"Study {study}: test top-1 vs training compute (ce epochs: each epoch's step cost in ce steps, "
             "summed; mean ± sd over seeds; n = seeds per line in each panel)")
    if ep.empty:
        return _empty(title, f"no complete ICP or ce run of study {study} yet")
    ep = _with_compute(_with_epochs(ep, done), done)
    x = "training compute (ce epochs)"
    ep[x] = ep.compute
    return _top1_panels(ep, x, title, dict(left=0))


@figure("compute", "main",
        "Test top-1 vs training compute through each epoch, in ce epochs (each epoch's step cost in ce steps, "
        "summed: 1 for ce and in ICP's warm-up, (2K + 4)/3 after; ``icp.methods.options.epoch_costs``), mean ± "
        "sd over seeds: the ICP variants, the α-only control (``icp+steps=0``), ce and the FLOP-matched ce "
        "(``ce+budget=...``) in one panel per dataset, model and scenario, a line per variant and training "
        "length. At equal compute, ICP's curve is judged against the FLOP-matched ce's.")
def compute(runs, epochs, ctx):
    return compute_curves(runs, epochs, "main")


def _rate(tag: str) -> tuple[str, float]:
    m = re.match(r"^(sym|asy)([0-9.]+)$", tag)
    return (("symmetric" if m[1] == "sym" else "asymmetric"), float(m[2])) if m else ("clean", 0.0)


@figure("noise", "noisy",
        "Last-epoch test top-1 vs label-noise rate, a line per variant and training length (clean = 0, from the "
        "clean runs of the same variant and length), symmetric and asymmetric noise as line styles; one panel "
        "per dataset and model, controls beside the runs they judge.")
def noise(runs, epochs, ctx):
    noisy = _complete(runs, "noisy")
    title = ("Study noisy: last-epoch test top-1 vs label-noise rate (mean ± sd over seeds; n = seeds per point, "
             "0% = the clean runs; each line's training length in its legend)")
    if noisy.empty:
        return _empty(title, "no complete run of study noisy yet")
    keys = ["dataset", "model"]  # the scenario is the x-axis here, the training length a line's
    same = [*keys, "variant", "epochs"]
    clean = _complete(runs, None)
    clean = clean[clean.scenario == "clean"].merge(noisy[same].drop_duplicates(), on=same)  # the noisy runs' own
    df = pd.concat([noisy, clean]).drop_duplicates("run_id").copy()
    kinds = df.scenario.map(_rate)
    df["noise"], df["noise rate (%)"] = [k for k, _ in kinds], [100 * r for _, r in kinds]
    df["test top-1 (%)"] = df.top1.astype(float) * 100
    rows = []
    for kind in ("symmetric", "asymmetric"):  # the clean point starts both curves
        part = df[df.noise.isin(["clean", kind])].assign(noise=kind)
        if (part["noise rate (%)"] > 0).any():
            rows.append(part)
    df = pd.concat(rows) if rows else df
    at = ["noise", "noise rate (%)"]
    df = _line_per_length(df, keys, at=at)
    colours = _colours(df.line)

    def draw(part):
        return lambda ax: _lines(ax, part, "noise rate (%)", "test top-1 (%)", colours, hue="line", style="noise",
                                 at=at)

    return _grid([(_condition_name(key), draw(part)) for key, part in _by(df, keys)], title)


@figure("fewshot", "fewshot",
        "Last-epoch test top-1 vs training images per class (log axis), a line per variant over the shot "
        "counts (mean ± sd over seeds); one panel per dataset and model. Under the fixed budget of optimizer "
        "steps each shot count trains its own number of epochs, given under its tick (a range where a control "
        "trains longer).")
def fewshot(runs, epochs, ctx):
    few = _complete(runs, "fewshot").copy()
    title = ("Study fewshot: last-epoch test top-1 vs training images per class (mean ± sd over seeds; "
             "n = seeds per point; the epochs of each shot count's step budget under its tick)")
    if few.empty:
        return _empty(title, "no complete run of study fewshot yet")
    x = "images per class"
    few[x] = few.scenario.str.extract(r"^(\d+)shot$")[0].astype(float)
    few["test top-1 (%)"] = few.top1.astype(float) * 100
    keys = ["dataset", "model"]  # the scenario is the x-axis here; its step budget sets the epochs
    few = _line_per_length(few, keys, at=x, epochs_in_name=False)
    colours = _colours(few.line)

    def draw(part):
        def on(ax):
            _lines(ax, part, x, "test top-1 (%)", colours, hue="line", at=x)
            ax.set_xscale("log")
            shots = sorted(part[x].dropna().unique())
            lengths = part.groupby(x).epochs  # one per shot count; a range where a control trains longer
            ticks = [f"{v:g}\n{int(lengths.min()[v])} ep" if lengths.nunique()[v] == 1
                     else f"{v:g}\n{int(lengths.min()[v])}–{int(lengths.max()[v])} ep" for v in shots]
            ax.set_xticks(shots, ticks)  # the shot counts run, not powers of ten, and their epochs
            ax.set_xticks([], minor=True)
            ax.set_xlabel(f"{x} (log; under each: its epochs)")
        return on

    return _grid([(_condition_name(key), draw(part)) for key, part in _by(few, keys)], title)


def _option(runs: pd.DataFrame, name: str, default=None) -> pd.Series:
    return runs.method_options.map(lambda s: json.loads(s).get(name, default) if isinstance(s, str) else default)


@figure("steps", "steps",
        "Test top-1 and training images/s vs the number of ICP refinement steps K; an accuracy and a cost panel "
        "per condition.")
def steps(runs, epochs, ctx):
    from icp.aggregate import variant_of
    from icp.grid import variant_label

    st = _complete(runs, "steps").copy()
    title = ("Study steps: ICP refinement steps K (mean ± sd over seeds; n = seeds per K; K = 0 is the α-only "
             "control, one run shared by every line)")
    if st.empty:
        return _empty(title, "no complete run of study steps yet")
    st["K (refinement steps)"] = _option(st, "steps")
    st["test top-1 (%)"] = st.top1.astype(float) * 100
    st["training images/s"] = st.images_per_s.astype(float)
    # the line: the method with its options other than K (K is the x-axis)
    st["method"] = [variant_label(variant_of(m, {k: v for k, v in json.loads(o or "{}").items() if k != "steps"}))
                    for m, o in zip(st.method, st.method_options)]
    # K = 0 is one run whatever the input optimizer (the α-only control, icp+steps=0): the first point of every line
    zero = (st["K (refinement steps)"] == 0) & (st.method.str.split(" ").str[0] == "icp")
    lines = st[~zero].method.unique()
    st = pd.concat([st[~zero], *(st[zero].assign(method=line) for line in lines)], ignore_index=True)
    colours = _colours(st.method)

    def draw(part, y, ylabel):
        def on(ax):
            from matplotlib.ticker import MaxNLocator

            _lines(ax, part, "K (refinement steps)", y, colours, hue="method", legend="method",
                   at="K (refinement steps)")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return on

    panels = []
    for key, part in _by(st, CONDITION):
        panels += [(f"{_condition_name(key)}: accuracy", draw(part, "test top-1 (%)", "test top-1 (%)")),
                   (f"{_condition_name(key)}: cost",
                    draw(part, "training images/s", "training images/s\n(all images trained ÷ training time)"))]
    return _grid(panels, title, ncols=2, size=(5.2, 3.4))


@figure("tuning", "tuned",
        "Equal tuning: the expected best validation top-1 of k trials against k, for every method of each tuned "
        "condition (order statistics over its trials at the tuning seed, k drawn without replacement; a failed "
        "or diverged trial counts as 0 %), a dashed line at trial 0, the method's default setting, at the same seed: "
        "a line still rising at the last trial says the budget was not enough.")
def tuning(runs, epochs, ctx):
    from icp.tuning_table import TRIAL, expected_best, is_trial

    title = ("Study tuned: expected best validation top-1 (%) of k of a method's trials (k drawn without "
             "replacement; lost trials count as 0 %), one line per method; dashed: trial 0, its default setting")
    trials = runs[is_trial(runs.variant)].copy()
    trials = trials[trials.studies.fillna("").str.split(";").map(lambda s: "tuned" in s).astype(bool)]
    if trials.empty:
        return _empty(title, "no tuning trial of study tuned yet")
    trials["method"] = trials.variant.str.replace(TRIAL, "", regex=True)
    value = trials.val_top1.astype(float).where(trials.status == "complete")
    trials["lost"] = value.isna()
    trials["value"] = value.fillna(0.0) * 100
    rows = []
    for key, part in _by(trials, CONDITION):
        for method, m in part.groupby("method", sort=True):
            n = len(m)
            name = f"{method} ({n} trials, {int(m.lost.sum())} lost)"
            rows += [{**key, "method": method, "name": name, "k (trials)": k,
                      "expected best val top-1 (%)": expected_best(m.value, k)} for k in range(1, n + 1)]
    curves = pd.DataFrame(rows)
    colours = _colours(curves.method)
    # trial 0 is each method's default setting (icp.tuning), at the trials' seed: the line tuning must beat
    defaults = trials[trials.variant.str.endswith("+trial=0") & ~trials.lost].assign(variant=lambda t: t.method)

    def draw(part):
        def on(ax):
            from matplotlib.ticker import MaxNLocator

            for method, m in part.groupby("method", sort=True):
                ax.plot(m["k (trials)"], m["expected best val top-1 (%)"], marker="o", color=colours[method],
                        label=m.name.iloc[0])
                mine = defaults[defaults.variant == method]
                for k in CONDITION:
                    mine = mine[mine[k].astype(str) == str(m[k].iloc[0])]
                if len(mine):
                    ax.axhline(100 * float(mine.val_top1.iloc[0]), color=colours[method], linestyle="--",
                               linewidth=1, label=f"{method}: trial 0, its default setting (seed {int(mine.seed.iloc[0])})")
            ax.set(xlabel="k (trials)", ylabel="expected best val top-1 (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7, title="method", title_fontsize=7, framealpha=0.8)
        return on

    return _grid([(_condition_name(key), draw(part)) for key, part in _by(curves, CONDITION)], title)


def _icp_epochs(runs, epochs, study="main") -> pd.DataFrame:
    done = _complete(runs, study)
    done = done[done.method.isin(ICP_METHODS)]
    return _with_epochs(epochs[epochs.run_id.isin(done.run_id)].copy(), done)


def _taps(ep: pd.DataFrame) -> list[str]:
    """The feature taps recorded (a non-null ``diag.feature_mse.<tap>``) in ``ep``, shallow to deep."""
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.") and ep[c].notna().any()]
    natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]  # noqa: E731
    return sorted((c.removeprefix("diag.feature_mse.") for c in cols), key=natural)


@figure("schedule", "main",
        "α_e, the task-loss weight, per epoch as recorded, one panel per condition; the layer weights w_l per "
        "model over that model's own taps.")
def schedule(runs, epochs, ctx):
    from icp.methods.options import layer_weights

    ep = _icp_epochs(runs, epochs)
    title = ("ICP's loss weights, as recorded by the runs of study main\n"
             "top: α_e = 1 in warm-up, then cos(π(e−W)/(2(E−W))), per condition (mean over seeds); "
             "bottom: layer weights w_l per model, over the feature taps its runs recorded")
    if ep.empty or "diag.alpha" not in ep:
        return _empty(title, "no complete ICP run of study main yet")
    colours = _colours(ep.variant)

    def alpha(part):
        def on(ax):
            _lines(ax, part, "epoch", "diag.alpha", colours, errorbar=None)
            ax.set(xlabel="epoch", ylabel="α_e (weight of the task loss)", ylim=(-0.05, 1.05))
        return on

    def weights(taps):
        def on(ax):
            x = np.arange(len(taps))
            for off, kind in ((-0.2, "cosine"), (0.2, "uniform")):
                ax.bar(x + off, layer_weights(kind, len(taps)), width=0.4, label=kind)
            ax.set_xticks(x, taps)
            ax.set(xlabel="feature tap (shallow → deep)", ylabel="layer weight w_l", ylim=(0, 1.15))
            ax.legend(title="layer_weights", fontsize=7, title_fontsize=7, loc="lower left", framealpha=0.8)
        return on

    panels = [(_condition_name(key), alpha(part)) for key, part in _by(ep, CONDITION)]
    ncols = min(3, max(len(panels), ep.model.nunique()))
    panels += [None] * (-len(panels) % ncols)  # the layer weights start a row of their own
    for model, part in ep.groupby("model", sort=True):
        taps = _taps(part)
        if taps:
            panels.append((f"{model}: layer weights over its {len(taps)} taps", weights(taps)))
    return _grid(panels, title, ncols=ncols)


@figure("input_shift", "main",
        "How far ICP moves the input: mean ``|x_K − x|`` per epoch, per variant; one panel per condition.")
def input_shift(runs, epochs, ctx):
    frames = {s: _icp_epochs(runs, epochs, s) for s in ("main", "ablations", "steps")}
    shown = [s for s, f in frames.items() if not f.empty and (f.get("diag.input_shift", pd.Series()) > 0).any()]
    ep = pd.concat([frames[s] for s in shown]).drop_duplicates(["run_id", "epoch"]) if shown else pd.DataFrame()
    title = ("How far ICP moves the input: mean |x_K − x| per epoch (normalised units, mean ± sd over seeds; "
             f"stud{'y' if len(shown) == 1 else 'ies'} {', '.join(shown or ['main'])})")
    if ep.empty:
        return _empty(title, "no complete ICP run with refinement yet")
    ep = ep[ep["diag.input_shift"] > 0].copy()  # K = 0 moves nothing: no point on a log axis
    # a log axis only where the shifts span more than a factor of ten; a narrow range reads better on a linear one
    log = ep["diag.input_shift"].max() / ep["diag.input_shift"].min() > 10
    return _curves(ep, "diag.input_shift", title, log=log,
                   ylabel=f"mean |x_K − x| (normalised units{', log' if log else ''})")


@figure("feature_distance", "main",
        "Per-layer MSE between the features of the clean and of the refined input, per epoch; one panel per "
        "condition and variant, its model's taps as lines.")
def feature_distance(runs, epochs, ctx):
    ep = _icp_epochs(runs, epochs)
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.")]
    title = ("Per-layer feature distance between clean and ICP-refined inputs, study main (mean ± sd over seeds); "
             "one panel per condition and variant")
    if ep.empty or not cols or ep[cols].notna().sum().sum() == 0:
        return _empty(title, "no complete ICP run with refinement yet")
    long = ep.melt(id_vars=["run_id", "variant", "seed", "epoch", *CONDITION], value_vars=cols, var_name="tap",
                   value_name="MSE").dropna(subset=["MSE"])  # a model's panel keeps the taps it has
    long["tap"] = long.tap.str.removeprefix("diag.feature_mse.")
    colours = _colours(long.tap)

    def draw(part):
        def on(ax):
            _lines(ax, part, "epoch", "MSE", colours, hue="tap", legend="tap")
            ax.set_yscale("log")
            ax.set(xlabel="epoch", ylabel="MSE(f_l(x), f_l(x_K)) (log)")
        return on

    return _grid([(f"{_condition_name(key)}\nvariant {key['variant']}", draw(part))
                  for key, part in _by(long, [*CONDITION, "variant"])], title)


@figure("critical_difference", "main",
        "Supplementary: critical-difference diagram (Demšar 2006) of the methods' average ranks (1 = best) of "
        "last-epoch test top-1 across the settings (one condition of one of the studies main, noisy, fewshot and "
        "tuned: the tuned finals) that hold every ranked method; a bar joins methods that the Nemenyi test after "
        "Friedman's (α = 0.05, scikit-posthocs) cannot tell apart. The title gives the critical difference in "
        "ranks and the number of settings: with few settings the critical difference is wide and the diagram can "
        "show little (two methods over two settings can never differ). A method with a diverged run in a "
        "setting takes the worst possible top-1 (0 %) there: that setting counts as a loss for it, not as "
        "missing. The controls (α-only, FLOP-matched ce) are not ranked; ``tables/verdict.md`` gives every "
        "method's IQM difference to ce with its interval and probabilities of improvement.")
def critical_difference(runs, epochs, ctx):
    from icp import verdict

    plt, _ = _libs()
    v = verdict.compute(runs, reps=1)  # ranks only: no interval is drawn here
    title = "Which method wins across settings: average rank of last-epoch test top-1 (1 = best)"
    k, n = len(v.ranked_methods), len(v.ranked_settings)
    if k < 2:
        return _empty(title, "fewer than two methods share a setting of studies main, noisy, fewshot or tuned yet")
    import scikit_posthocs as sp

    ranks = v.table.set_index("method").avg_rank.reindex(v.ranked_methods)
    labels = {m: _label_short(m) for m in v.ranked_methods}
    ranks.index = ranks.index.map(labels)
    sig = verdict.nemenyi(v).rename(index=labels, columns=labels)
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.3 * k), layout="constrained")
    sp.critical_difference_diagram(ranks, sig, ax=ax, alpha=verdict.ALPHA, label_fmt_left="{label} ({rank:.2f})",
                                   label_fmt_right="({rank:.2f}) {label}", marker_props={"clip_on": False})
    ax.set_xlim(0.9, max(k, ranks.min() + v.cd) + 0.1)  # the whole range of ranks, 1 to k, and the CD bar
    ax.grid(axis="y", visible=False)
    # the CD bar, from the best rank, in points above the rank ticks (whatever the Axes' height in rank units)
    from matplotlib.transforms import offset_copy

    above = offset_copy(ax.transData, fig=fig, y=26, units="points")
    start = float(ranks.min())
    ax.plot([start, start + v.cd], [0, 0], color="k", linewidth=2, transform=above, clip_on=False)
    ax.text(start + v.cd / 2, 0, f"critical difference = {v.cd:.2f} ranks", ha="center", va="bottom", fontsize=9,
            transform=offset_copy(ax.transData, fig=fig, y=30, units="points"), clip_on=False)
    low, _ = ax.get_ylim()
    ax.set_ylim(low, 0.05)
    friedman = "" if v.friedman_p != v.friedman_p else f"; Friedman {verdict.p_text(v.friedman_p)}"
    losses = f"; {len(v.diverged)} diverged setting(s) counted as losses" if v.diverged else ""
    fig.suptitle(textwrap.fill(f"{title}. {k} methods over {n} settings, critical difference (Nemenyi, "
                               f"α = {verdict.ALPHA:g}) {v.cd:.2f} ranks{friedman}{losses}", 100), fontsize=9)
    return fig


def _label_short(variant: str) -> str:
    """A variant's label without what the tables add in brackets (the CD diagram's labels sit in one line)."""
    from icp.grid import variant_label

    return variant_label(variant).split(" (")[0]


def perturbation_run(runs: pd.DataFrame) -> Optional[pd.Series]:
    """The run whose checkpoint the perturbation figure uses: the first complete ICP run of study main on clean
    data (seed 0 where there is one)."""
    done = _complete(runs, "main")
    refines = [_refines(m, json.loads(o or "{}")) for m, o in zip(done.method, done.method_options)]
    done = done[pd.Series(refines, index=done.index, dtype=bool) & (done.scenario == "clean")]
    return None if done.empty else done.sort_values(["seed"], kind="stable").iloc[0]


@figure("perturbation", "main",
        "Original, ICP-refined and i-FGSM images and their amplified differences (the paper's Fig. 1), from a "
        "trained ICP checkpoint; refined as one training-size batch, so each image's step equals training's.")
def perturbation(runs, epochs, ctx, n_images: int = 6):
    plt, _ = _libs()
    from icp import figure_data

    run = perturbation_run(runs)
    title = "Constructive (ICP) vs destructive (i-FGSM) perturbations of test images"
    if run is None:
        return _empty(title, "no complete ICP run of study main on clean data yet")
    got = figure_data.get_arrays(run.path, "perturbation")  # written by the run's job (icp.figure_data)
    batch, refined = int(got["batch"]), int(got["refined"])
    n_images = min(n_images, len(got["original"]))
    conf = {k: got[f"p.{k}"] for k in ("original", "ICP", "i-FGSM")}
    base = got["original"]
    diffs = {"ICP": got["ICP"] - base, "i-FGSM": got["i-FGSM"] - base}
    scale = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0  # one colour scale for both rows
    rows = [("original", base, "original"), ("ICP-refined", got["ICP"], "ICP"),
            ("ICP − original", diffs["ICP"], None), ("i-FGSM", got["i-FGSM"], "i-FGSM"),
            ("i-FGSM − original", diffs["i-FGSM"], None)]
    fig, axes = plt.subplots(len(rows), n_images, figsize=(1.8 * n_images, 2.0 * len(rows) + 0.9), squeeze=False,
                             layout="constrained")
    for i, (label, imgs, key) in enumerate(rows):
        for j in range(n_images):
            ax = axes[i, j]
            if key is None:  # a difference: signed, averaged over channels, amplified to the colour range
                shown = ax.imshow(imgs[j].mean(-1), cmap="coolwarm", vmin=-scale, vmax=scale)
            else:
                im = np.clip(imgs[j], 0, 1)
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None,
                          vmin=0, vmax=1)
                ax.set_xlabel(f"p(y)={conf[key][j]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.colorbar(shown, ax=axes[-1, :].tolist(), orientation="horizontal", shrink=0.6, aspect=40,
                 label=f"refined − original, pixel intensity (0–1 scale), mean over channels; full colour = ±{scale:.2g}")
    if refined == batch:
        as_training = (f"refined as one training batch of B={batch} test images, so each image's step equals "
                       "training's")
    else:  # a test split smaller than the training batch
        as_training = f"refined as one batch of all {refined} test images, fewer than training's B={batch}"
        if got["optimizer"] == "sgd" and got["reduction"] == "mean":
            as_training += f", so each image's step is {batch / refined:.2g}× training's"
    fig.suptitle(f"{title}\n{run.run_id}: K={got['steps']}, η={got['step_size']:g} ({got['optimizer']}, loss reduced "
                 f"by {got['reduction']}); i-FGSM: same K and η, sign ascent\n{as_training}; the first {n_images} shown; "
                 f"p(y) = softmax probability of the true class", fontsize=9)
    return fig


def _complete_vaes(runs: pd.DataFrame) -> pd.DataFrame:
    """The complete VAE runs of the generative study (not the classifiers that give FID its features)."""
    from icp.aggregate import kind_of

    done = _complete(runs, "generative")
    return done[done.model.map(kind_of) == "generative"]


def _vae_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and variant of the generative study, its complete VAE run of the lowest seed."""
    return _complete_vaes(runs).sort_values("seed", kind="stable").drop_duplicates(["dataset", "variant"])


def _show(ax, img, mean, std):
    """A normalised image (C, H, W) in [0, 1] on ``ax``, grey for one channel."""
    mean, std = np.asarray(mean).reshape(-1, 1, 1), np.asarray(std).reshape(-1, 1, 1)
    img = np.clip(img * std + mean, 0, 1).transpose(1, 2, 0)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0,
              vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _vae_grid(runs, title: str, draw, n_images: int = 8, show_inputs: bool = False):
    """One row of ``n_images`` images per VAE run of :func:`_vae_runs`: ``draw(dataset, run, arrays)`` gives
    (label, images) from the run's figure arrays (:func:`icp.figure_data.vae`, written by its job);
    ``show_inputs`` puts the test images above each dataset's rows."""
    from icp import figure_data

    plt, _ = _libs()
    chosen = _vae_runs(runs)
    if chosen.empty:
        return _empty(title, "no complete VAE run of study generative yet")
    rows = []
    for dataset, part in chosen.groupby("dataset", sort=False):
        for i, (_, run) in enumerate(part.iterrows()):
            got = figure_data.get_arrays(run.path, "vae")
            if show_inputs and i == 0:
                rows.append((f"{dataset}\ntest images", got["inputs"][:n_images], got))
            rows.append((*draw(dataset, run, got), got))
    fig, axes = plt.subplots(len(rows), n_images, figsize=(1.4 * n_images, 1.55 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for i, (label, images, got) in enumerate(rows):
        for j in range(n_images):
            _show(axes[i, j], images[j], got["mean"], got["std"])
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


@figure("generative_curves", "generative",
        "Test SSIM, ELBO and FID of reconstructions vs epoch per variant; a row of panels per condition.")
def generative_curves(runs, epochs, ctx):
    done = _complete_vaes(runs)
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    title = "Study generative: test metrics vs epoch (mean ± sd over seeds; n = seeds per variant in each panel)"
    if ep.empty:
        return _empty(title, "no complete VAE run of study generative yet")
    ep = _with_epochs(ep, done)
    ep["SSIM (%)"] = ep.test_ssim * 100
    names = {"SSIM (%)": "SSIM (%) ↑", "test_elbo": "ELBO (nats) ↑", "test_fid_recon": "FID of reconstructions ↓"}
    colours = _colours(ep.variant)

    def draw(part, y):
        def on(ax):
            _lines(ax, part, "epoch", y, colours)
            ax.set(xlabel="epoch", ylabel=names[y])
        return on

    panels = []
    for key, part in _by(ep, CONDITION):
        for y, name in names.items():
            # FIDs are null on epochs that train.fid_every skips, or without features
            part_y = part.dropna(subset=[y])
            if part_y.empty:
                panels.append(None)
            else:
                panels.append((f"{_condition_name(key)}: {name}", draw(part_y, y)))
    return _grid(panels, title, ncols=len(names), size=(4.4, 3.2))


@figure("reconstructions", "generative",
        "Test images and each method's VAE reconstructions (the lowest seed).")
def reconstructions(runs, epochs, ctx, n_images: int = 8):
    def draw(dataset, run, got):
        return f"{run.variant} (s{run.seed})\nSSIM {100 * float(run.ssim):.1f}%", got["recon"][:n_images]

    return _vae_grid(runs, "Study generative: test images and their reconstructions (z = μ) per method; "
                           "SSIM: the run's last-epoch test mean", draw, n_images, show_inputs=True)


@figure("samples", "generative",
        "Prior samples of each method's VAE, the same z for all.")
def samples(runs, epochs, ctx, n_images: int = 8):
    def draw(dataset, run, got):
        fid = "–" if run.fid_prior != run.fid_prior else f"{float(run.fid_prior):.1f}"
        return f"{dataset}: {run.variant} (s{run.seed})\nFID(prior) {fid}", got["samples"][:n_images]

    return _vae_grid(runs, "Study generative: samples from the prior z ~ N(0, I), the same z for every method",
                     draw, n_images)


def checkpoint_runs(name: str, grid) -> list:
    """The grid runs whose checkpoints a figure reads (Snakemake inputs): perturbation's ICP run, and the VAE
    runs of the lowest seed per dataset and variant for reconstructions and samples."""
    if name == "perturbation":
        for run in grid.select("main") if "main" in grid.studies else []:
            if _refines(run.method, dict(run.options)) and run.scenario == "clean":
                return [run]
        return []
    if name in ("reconstructions", "samples") and "generative" in grid.studies:
        from icp.aggregate import kind_of

        chosen = {}
        for run in sorted(grid.select("generative"), key=lambda r: r.seed):
            if kind_of(run.model) == "generative":
                chosen.setdefault((run.dataset, run.run_id.split("/")[3]), run)
        return list(chosen.values())
    return []


# ------------------------------------------------------------------------------------------ writing
def make(name: str, runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: str | Path, ctx=None) -> list[Path]:
    """Draw one figure and write ``<out_dir>/<name>.png`` and ``.pdf`` (atomically: nothing half-written)."""
    plt, sns = _libs()
    if name not in FIGURES:
        from icp.config import ConfigError

        raise ConfigError(f"unknown figure '{name}'; known: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"):
        fig = FIGURES[name][1](runs, epochs, ctx)
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # epochs are whole numbers: no 1.5 on an epoch axis
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        # no creation date: the same records give byte-identical files (DVC and git see no change)
        fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


if __doc__:  # the catalogue, from the registrations (python -OO drops docstrings)
    __doc__ += "\nThe figures (study they need): what each shows\n\n" + "\n".join(
        f"* ``{name}`` ({study}): {CAPTIONS[name]}" for name, (study, _) in FIGURES.items()) + "\n"
