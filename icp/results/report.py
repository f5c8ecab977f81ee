"""``icp report PATH...``: mean ± std over seeds of the records under the given paths, a view over the code that
builds the pipeline's tables (:mod:`icp.results.frames`, :mod:`icp.results.cells`, :mod:`icp.results.render`), for
records that do not come from a grid.

Runs are grouped by condition (dataset, model, scenario), variant (method and its non-default options), epochs
and config (:func:`icp.config.cell_digest`): only runs that differ by seed alone share a row, so two seed-0 runs
of different settings are two rows of n = 1, not one of n = 2; where one variant has several configs, a ``config``
column names each. Each row says how many seeds it averages and is compared with the baseline trained in the same
settings (a FLOP-matched control ``ce+budget=M`` with the baseline at the baseline's own length, as the study
tables compare it). Only ``complete`` runs are averaged; ``include_incomplete`` keeps the rows that have none yet (their
``not_final`` and ``diverged`` counts say why).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from icp.results import cells, frames, render


def summary(paths: Iterable, include_incomplete: bool = False) -> pd.DataFrame:
    runs = frames.runs_frame(paths=paths)
    if runs.empty:
        return runs
    runs, own = _with_their_baselines_epochs(runs)
    table = cells.cells(runs, extra_keys=("epochs",))
    for (*key, variant), epochs in own.items():  # each control shows the epochs it trained
        at = (table[list(frames.CONDITION)] == pd.Series(key, index=list(frames.CONDITION))).all(axis=1)
        table.loc[at & (table.variant == variant), "epochs"] = epochs
    return table if include_incomplete else table[table.n > 0].reset_index(drop=True)


def _with_their_baselines_epochs(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A FLOP-matched control (``ce+budget=M``: the baseline trained longer) is compared with the baseline of its
    condition at the baseline's own length, as in the study tables: its runs take that length as their grouping
    epochs where the condition has one. Returns the runs and each control's own epochs, to show."""
    runs, own = runs.copy(), {}
    for variant in runs.variant[runs.variant.str.contains("+budget=", regex=False)].unique():
        base = variant.split("+budget=", 1)[0]
        for key, part in runs[runs.variant == variant].groupby(list(frames.CONDITION)):
            same = (runs[list(frames.CONDITION)] == pd.Series(key, index=list(frames.CONDITION))).all(axis=1)
            lengths = runs.loc[same & (runs.variant == base), "epochs"].unique()
            if len(lengths) == 1:
                own[(*key, variant)] = part.epochs.iloc[0]
                runs.loc[part.index, "epochs"] = lengths[0]
    return runs, own


def markdown(table: pd.DataFrame) -> str:
    return render.flat_markdown(table)
