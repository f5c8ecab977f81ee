"""``icp report PATH...``: mean ± std over seeds of the records under the given paths, a view over
:mod:`icp.aggregate` (the code that builds the pipeline's tables), for records that do not come from a grid.

Runs are grouped by condition (dataset, model, scenario), variant (method and its non-default options), epochs
and config (:func:`icp.config.cell_digest`): only runs that differ by seed alone share a row, so two seed-0 runs
of different settings are two rows of n = 1, not one of n = 2; where one variant has several configs, a ``config``
column names each. Each row says how many seeds it averages and is compared with the baseline trained in the same
settings. Only ``complete`` runs are averaged; ``include_incomplete`` keeps the rows that have none yet (their
``not_final`` and ``diverged`` counts say why).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from icp import aggregate


def summary(paths: Iterable, include_incomplete: bool = False) -> pd.DataFrame:
    runs = aggregate.runs_frame(paths=paths)
    if runs.empty:
        return runs
    table = aggregate.cells(runs, extra_keys=("epochs",))
    return table if include_incomplete else table[table.n > 0].reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    return aggregate.flat_markdown(table)
