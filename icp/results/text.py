"""Text: the one place where the results write a number. A metric's scale and digits (:func:`scale_digits`: fractions
in %, NLL with three decimals, the raw metrics as they are), a cell (``mean ± std (n)``, or ``(2/3, 1 diverged)``
when runs are left out: :func:`cell_text`), a difference to the baseline with its interval and test
(``+3.00 [+0.52, +5.48] (n=3, t-test p=0.035, Holm p=0.070)``: :func:`delta_text`; ``p < 0.001`` below a
thousandth, ``every pair alike`` for constant differences), a p-value (:func:`p_text`: ``p=0.035`` in a table,
``p = 0.035`` in the verdict's prose), the row and column labels of a table (:func:`row_label`,
:func:`condition_label`), a training compute (:func:`compute_text`) and the verdict's intervals
(:func:`interval_text`). The study tables (:mod:`icp.results.tables`), the Equal tuning section
(:mod:`icp.results.tuning`), the verdict (:mod:`icp.results.verdict`), ``icp report`` and the DVC headline
(:mod:`icp.results.summary`) all write through these.
"""
from __future__ import annotations

import math

import pandas as pd

from icp.naming import variant_label
from icp.results.frames import CONDITION, RAW


def scale_digits(metric: str) -> tuple[float, int]:
    """How a metric is shown: (factor, decimals); fractions in %, NLL with three decimals."""
    return (1.0, 3) if metric == "nll" else (1.0, 2) if metric in RAW else (100.0, 2)


def shown(value: float, metric: str) -> float:
    """``value`` as the tables show it (scaled and rounded), so that values which print alike compare alike."""
    scale, digits = scale_digits(metric)
    return float(f"{value * scale:.{digits}f}") if value == value else math.nan


def pct(value: float, scale: float = 100.0, digits: int = 2) -> str:
    """``value`` scaled and rounded for a cell; empty for NaN."""
    return "" if value != value else f"{value * scale:.{digits}f}"


def count_text(row) -> str:
    """``3`` for a cell whose runs are all in; ``2/3, 1 diverged`` when some are left out, and why."""
    total = row["n"] + row["diverged"] + row["not_final"]
    return str(row["n"]) if total == row["n"] else f"{row['n']}/{total}, {row['left_out']}"


def cell_text(row, metric: str, tex: bool) -> str:
    """``72.70 ± 0.40 (3)``: a cell's mean ± std over seeds of ``metric`` at its scale (:func:`scale_digits`) and
    its :func:`count_text`; ``–`` without a value."""
    scale, digits = scale_digits(metric)
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean != mean:
        return "–" if row["n"] else f"– ({count_text(row)})"
    pm = r" $\pm$ " if tex else " ± "
    text = pct(mean, scale, digits) + (pm + pct(std, scale, digits) if std == std else "")
    return f"{text} ({count_text(row)})"


def condition_label(study_cells: pd.DataFrame) -> pd.Series:
    """A table's column per cell: the factors of :data:`CONDITION` that vary in the study, joined by ``/``."""
    varying = [c for c in CONDITION if study_cells[c].nunique() > 1] or ["dataset"]
    return study_cells[varying].astype(str).agg("/".join, axis=1)


def row_label(c: pd.DataFrame) -> pd.Series:
    """The variant, and where its runs of one condition have several configs (a recipe changed between seeds),
    ``variant @config_key`` for each: cells of different settings are shown apart, never one in place of another."""
    several = c.groupby(["condition", "variant"], dropna=False).config_key.transform(
        lambda k: k.nunique(dropna=False)) > 1
    label = c.variant.map(variant_label)
    label = label.where(~c.variant.str.contains(r"\+budget=", regex=True), budget_labels(c, label))
    return label.where(~several, label + " @" + c.config_key.fillna("?").astype(str))


def budget_labels(c: pd.DataFrame, label: pd.Series) -> pd.Series:
    """A FLOP-matched control's label with its ratio and epochs, ``ce+budget=icp-adam (ce, FLOP-matched to
    icp-adam: 3.75×, 615 epochs)``, where they are one across the table's columns (else the compute table gives
    them per condition)."""
    if "compute_ce_epochs_mean" not in c:
        return label
    text = compute_text(c)
    out = label.copy()
    for variant, rows in c[c.variant.str.contains(r"\+budget=", regex=True)].groupby("variant"):
        printed = {text(r) for _, r in rows.iterrows()} - {"–"}
        if len(printed) == 1:
            epochs, _, ratio = printed.pop().partition(" (")
            ratio = ratio.split("×")[0]
            for i in rows.index:
                out[i] = label[i].removesuffix(")") + (f": {ratio}×, {epochs} epochs)" if ratio else f": {epochs} epochs)")
    return out


def p_text(p: float, label: str = "p", tex: bool = False, spaced: bool = False) -> str:
    """``p=0.035`` as the tables write it, ``p = 0.035`` (``spaced``) as the verdict's prose does; below 0.001
    ``p < 0.001``, never ``p=0.000``. ``label`` names the p (``t-test p``, ``Holm p``)."""
    if p < 0.001:
        return f"{label} {'$<$' if tex else '<'} 0.001"
    return f"{label} = {p:.3f}" if spaced else f"{label}={p:.3f}"


TEST_NAMES = {"t": "t-test p", "sign-flip": "sign-flip p"}


def test_text(row, tex: bool) -> str:
    """``n=3, t-test p=0.035, Holm p=0.070``: the pairs, the test that gave p (a paired t-test from three pairs
    with a spread; else the exact sign-flip p, at least 2 / 2ⁿ) and Holm's adjustment over the table's family."""
    n = f"n={int(row['pairs'])}"
    if row["p_value"] != row["p_value"]:
        return f"{n}, no test"
    out = f"{n}, {p_text(row['p_value'], TEST_NAMES.get(row.get('test'), 'p'), tex)}"
    if row.get("p_holm") == row.get("p_holm"):
        return out + f", {p_text(row['p_holm'], 'Holm p', tex)}"
    explored = "primary" in row.index and str(row["primary"]) == "False"  # outside the declared family
    return out + (", exploratory" if explored else "")


def refinement_text(row) -> str:
    """``9.0e-03 [1.4e-03, 3.6e-03, 6.9e-03]``: the cell's mean input shift and feature MSE per tap."""
    taps = [row[c] for c in sorted(k for k in row.index if k.startswith("feature_mse.")) if row[c] == row[c]]
    shift = row.get("input_shift", math.nan)
    text = "–" if shift != shift else f"{shift:.1e}"
    return text + (f" [{', '.join(f'{v:.1e}' for v in taps)}]" if taps else "")


def delta_text(row, tex: bool) -> str:
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
    return f"{row['delta'] * scale:+.2f}{ci} ({test_text(row, tex)})"


def shown_delta(row) -> float:
    """A cell's difference to its baseline as printed (NaN for the baseline's own row)."""
    return math.nan if row["variant"] == row["baseline"] else shown(row["delta"], row["delta_of"])


def compute_text(study_cells: pd.DataFrame):
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


def number(value: float, fmt: str) -> str:
    """``value`` in format ``fmt``; ``–`` for NaN."""
    return "–" if value != value else format(value, fmt)


def interval_text(value: float, low: float, high: float, unit: str = "", too_few: bool = False) -> str:
    """``+1.23 % [+0.45, +2.01]``: a difference with its interval, ``unit`` after the value; ``(too few seeds)`` in
    place of an interval that was not drawn; ``–`` for none."""
    if value != value:
        return "–"
    if too_few:
        return f"{value:+.2f}{unit} (too few seeds)"
    return f"{value:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"
