"""What the figures share to draw: matplotlib and seaborn (imported on first use, :func:`libs`), the empty canvas,
the one layout of the curve figures (a grid of panels, each with its legend below it), their lines, and the image
rows of the figures drawn from a trained model."""
from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from icp.figures import common


def libs():
    """matplotlib (Agg) and seaborn, imported on first use: the Snakefile imports the figures for its catalogue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def empty(title: str, why: str):
    """A canvas that says why the figure has nothing to draw, under the figure's title."""
    plt, _ = libs()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    ax.set_title(title)
    return fig


def colours(values) -> dict:
    """One colour per value (a variant keeps its colour in every panel of a figure)."""
    _, sns = libs()
    values = sorted(set(values), key=str)
    return dict(zip(values, sns.color_palette(n_colors=max(len(values), 1))))


def panel_grid(panels: list, title: str, ncols: int = 3, size: tuple[float, float] = (4.6, 3.4)):
    """The one layout of the curve figures: one Axes per panel, ``ncols`` to a row. ``panels`` holds
    ``(panel title, draw(ax))`` pairs, or None for an empty slot (to start a new row)."""
    plt, _ = libs()
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


def lines(ax, part: pd.DataFrame, x: str, y: str, colours: dict, hue: str = "variant", legend: str = "variant",
          at: Optional[Sequence[str] | str] = None, style: Optional[str] = None, errorbar="sd",
          marker: Optional[str] = "o", names: Optional[dict] = None, err_style: str = "band"):
    """``part`` (one panel's rows) as lines of ``y`` over ``x``, one per ``hue`` value, mean and ``errorbar``
    over seeds (``err_style``: seaborn's ``band`` or ``bars``); the legend, below this Axes, gives each line this
    panel's n (see :func:`icp.figures.common.label_n`; ``names``: each ``hue`` value's name in it). A ``style``
    column with one value in the panel is no style: the lines keep their own dashes and the legend no entry."""
    _, sns = libs()
    if style is not None and part[style].nunique() < 2:
        style = None
    if names is None and hue == "line" and "line_name" in part:  # :func:`common.line_per_length`'s lines
        names = dict(zip(part.line, part.line_name))
    labels = common.label_n(part, hue, at, names)
    name = f"{legend} (n seeds)"
    data = part.assign(**{name: part[hue].map(labels)})
    order = [labels[v] for v in labels]
    if style is None and len(order) > 1:
        # each line its own dashes and marker as well as colour: a line that lies exactly on another (an α-only
        # control on the ICP run it controls) still shows under it
        sns.lineplot(data=data, x=x, y=y, hue=name, hue_order=order, palette={labels[v]: colours[v] for v in labels},
                     style=name, style_order=order, dashes=True, markers=True if marker else False,
                     errorbar=errorbar, err_style=err_style, ax=ax)
    else:
        sns.lineplot(data=data, x=x, y=y, hue=name, hue_order=order,
                     palette={labels[v]: colours[v] for v in labels}, style=style, marker=marker, errorbar=errorbar,
                     err_style=err_style, ax=ax)
    _small_legend(ax, None if style else name)
    ax.set(xlabel=x, ylabel=y)


def _small_legend(ax, title: Optional[str]):
    """Redraw seaborn's legend of ``ax`` in a small font (:func:`panel_grid` then puts it below the Axes)."""
    old = ax.get_legend()
    if old is None:
        return
    ax.legend(old.legend_handles, [t.get_text() for t in old.texts], title=title, fontsize=7, title_fontsize=7,
              framealpha=0.8, handlelength=3.5)  # long enough to show a line's dashes either side of its marker


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


def curves(ep: pd.DataFrame, y: str, title: str, keys: Sequence[str] = common.CONDITION, log: bool = False,
           ylabel: Optional[str] = None):
    """One panel per condition of ``y`` vs epoch, a line (mean ± sd over seeds) per variant."""
    palette = colours(ep.variant)

    def draw(part):
        def on(ax):
            lines(ax, part, "epoch", y, palette)
            if log:
                ax.set_yscale("log")
            ax.set(xlabel="epoch", ylabel=ylabel or y)
        return on

    return panel_grid([(common.condition_name(key), draw(part)) for key, part in common.split_by(ep, keys)], title)


def _marker(df: pd.DataFrame) -> Optional[str]:
    """A marker per epoch where the runs are short enough for markers to be told apart."""
    return "o" if df.epochs.max() <= 40 else None


def top1_panels(ep: pd.DataFrame, x: str, title: str, xlim: dict, points: Optional[pd.DataFrame] = None,
                dodge: float = 0.0):
    """Test top-1 (%) against column ``x`` of per-epoch rows ``ep``: one panel per dataset, model and scenario,
    a line per variant and training length (mean ± sd over seeds), the x axis limited by ``xlim``; ``points``
    (PANEL, ``label``, ``x``, ``y``, ``sd``): one labelled point each, with its sd as an error bar. ``dodge``: the
    lines of a panel spread along x over this width (in x's units), each its own offset, the sd then drawn as
    error bars rather than bands, so that lines at one x (runs of one length) do not hide each other."""
    panel = list(common.PANEL)
    ep["test top-1 (%)"] = ep.test_top1 * 100
    ep = common.line_per_length(ep, panel)
    palette = colours(ep.line)
    if dodge:
        for _, rows in ep.groupby(panel, sort=False):
            names = sorted(rows.line.unique())
            step = dodge / max(len(names) - 1, 1)
            offsets = {n: (i - (len(names) - 1) / 2) * step for i, n in enumerate(names)}
            ep.loc[rows.index, x] = rows[x] + rows.line.map(offsets)

    def draw(key, part):
        def on(ax):
            lines(ax, part, x, "test top-1 (%)", palette, hue="line", marker=_marker(part),
                  err_style="bars" if dodge else "band")
            if points is not None and len(points):
                mine = points[(points[panel] == pd.Series(key)[panel]).all(axis=1)]
                for r in mine.itertuples():
                    ax.errorbar(r.x, r.y, yerr=0 if r.sd != r.sd else r.sd, fmt="D", color="0.3", ms=4, capsize=2)
                    ax.annotate(r.label, (r.x, r.y), xytext=(4, 3), textcoords="offset points", fontsize=7)
            ax.set_xlim(**xlim)
        return on

    return panel_grid([(common.condition_name(key), draw(key, part)) for key, part in common.split_by(ep, panel)],
                      title)


def show_image(ax, img, mean, std):
    """A normalised image (C, H, W) in [0, 1] on ``ax``, grey for one channel."""
    mean, std = np.asarray(mean).reshape(-1, 1, 1), np.asarray(std).reshape(-1, 1, 1)
    img = np.clip(img * std + mean, 0, 1).transpose(1, 2, 0)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0,
              vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def vae_grid(runs, title: str, draw, n_images: int = 8, show_inputs: bool = False,
             why: str = "no complete VAE run of study generative yet"):
    """One row of ``n_images`` images per VAE run of :func:`icp.figures.common.vae_runs`: ``draw(dataset, run,
    arrays)`` gives (label, images) from the run's figure arrays (:func:`icp.figure_data.vae`, written by its
    job); ``show_inputs`` puts the test images above each dataset's rows; ``why``: the empty canvas's words."""
    from icp import figure_data

    plt, _ = libs()
    chosen = common.vae_runs(runs)
    if chosen.empty:
        return empty(title, why)
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
            show_image(axes[i, j], images[j], got["mean"], got["std"])
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig
