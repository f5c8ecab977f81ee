"""Tables: a study's sections and the files they are written to.

:func:`write_tables` writes ``<study>.csv`` (the cells, machine-readable), ``<study>.md``, ``<study>.tex``
(booktabs) and ``<study>.html`` (the ``.md`` as a self-contained page, which the Snakemake report shows): test
top-1 at the last epoch (the headline), at the best epoch (labelled with what selected it), macro-F1, ECE, the
difference to ``ce`` (:func:`icp.results.text.delta_text`), and a cost table (images/s over the study's complete
runs and its ratio to ``ce``, GPU-, device- and teacher GPU-hours and attempts over every attempt). A cell reads
``mean ± std (n)``, or ``(2/3, 1 diverged)`` when runs are left out. In each column, bold marks the best value as
printed among the "full" cells (no run left out, and as many runs as the table's largest cell), only when no other
full cell prints the same and its Holm-adjusted difference is significant. A study with declared primary
comparisons gets their table first (:func:`primary_section`), a tuned study its Equal tuning section
(:mod:`icp.results.tuning`); its family in full under the first table and the difference it detects under every table (:func:`family_note`,
:mod:`icp.power`). Runs that are not in a table are listed by run id under it (:func:`not_in_table`).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from icp.naming import variant_label
from icp import atomic, power
from icp.methods.options import teacher_of
from icp.results import tuning
from icp.results.cells import ALPHA, family_rows, significant, with_family
from icp.results.frames import BASELINE, CONDITION, kind_of
from icp.results.render import HTML_STYLE, html_table, html_text, md_table, tex_table
from icp.results.text import (cell_text, compute_text, condition_label, delta_text, number, refinement_text,
                              row_label, shown, shown_delta)

# the rows of the validation table that score a noise scenario's validation images on their clean labels
ORACLE_ROW = "oracle: clean validation labels (not available to a noisy-label method)"


def _full(table: pd.DataFrame) -> pd.Series:
    """The cells with the study's full seed count: none of their runs left out, and as many runs as the cell with
    the most. Only these may be bold: a mean over fewer seeds is not comparable, however high."""
    total = table.n + table.diverged + table.not_final
    return (table.n == total) & (table.n == total.max())


def _pivot(study_cells: pd.DataFrame, text, shown, lower: bool, tex: bool) -> pd.DataFrame:
    """Variants × conditions of ``text(row)``; in each column, the best ``shown(row)`` (the value as printed) among
    the :func:`_full` cells in bold when it is the only one (ties are not bold) and its difference to the baseline
    is :func:`significant`; ``shown`` None: nothing bold (a table whose metric no test compared)."""
    c = study_cells.assign(condition=condition_label(study_cells))
    c["row"] = row_label(c)
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
    teacher = [f"{h:.2f}" if teacher_of(m) else "–"
               for m, h in zip(cost.method, cost.teacher_gpu_hours)]
    text = pd.DataFrame({
        "images/s": rate.map(lambda v: number(v, ",.0f")),
        f"× {baseline} speed": speed.map(lambda v: number(v, ".2f")),
        "GPU-hours": cost.gpu_hours.map(lambda v: f"{v:.2f}"),
        "device-hours": cost.hours.map(lambda v: f"{v:.2f}"),
        "teacher GPU-hours": pd.Series(teacher, index=cost.index),
        "attempts": cost.attempts.astype(int).astype(str),
        "runs": cost.runs.astype(int).astype(str), "devices": cost.devices.fillna("")})
    text.index = text.index.map(variant_label)
    title = (f"Cost: training images/s over the study's complete runs (all conditions pooled: total images / total "
             f"training time), its ratio to {baseline}; GPU-, device- and teacher GPU-hours and attempts summed over "
             "every attempt of every run with a record (failed, diverged and requeued ones included)")
    return title, text


def sections(study_cells: pd.DataFrame, tex: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """The tables of one study, each (title, variants × conditions of text)."""
    cell = lambda m: (lambda r: cell_text(r, m, tex))  # noqa: E731
    mean = lambda m: (lambda r: shown(r[f"{m}_mean"], m))  # noqa: E731
    baseline = study_cells.baseline.iloc[0] if len(study_cells) else "ce"
    delta = lambda r: delta_text(r, tex)  # noqa: E731
    test = ("Seeds paired: mean [95 % t interval] (n pairs; p: the two-sided paired t-test from 3 pairs with a "
            "spread, else the exact sign-flip p, never below 2/2ⁿ; Holm p within the primary family, or "
            "'exploratory').")
    if (study_cells.model.map(kind_of) == "generative").all():
        metrics = [  # (title, metric, lower is better)
            ("Test SSIM (%) of reconstructions at the last epoch: mean ± std over seeds (n)", "ssim", False),
            (f"FID of test reconstructions (lower is better; {_fid_caption(study_cells)})", "fid_recon", True),
            ("FID of prior samples against the test images (lower is better; same features)", "fid_prior", True),
            ("Test ELBO per image (nats, up to a constant; higher is better)", "elbo", False)]
        compared = "SSIM"
    else:
        metrics = [("Test top-1 (%) at the last epoch: mean ± std over seeds (n)", "top1", False),
                   ("Validation top-1 (%) at the last epoch\nThe split every choice is made on, matching the setting: "
                    "a stratified 10 % of the training pool, its labels noised like the training labels in a noisy "
                    "cell, k images per class in a k-shot cell.", "val_top1", False),
                   ("Test top-1 (%) at the epoch of best validation top-1", "best_top1", False),
                   ("Test macro-F1 (%) at the last epoch", "macro_f1", False),
                   ("Test ECE (%, lower is better) at the last epoch", "ece", True)]
        compared = "Top-1"
    headline = metrics[0][1]
    out = [(title, _pivot(study_cells, cell(m), mean(m) if m == headline else None, lower, tex))
           for title, m, lower in metrics]
    if "val_clean_top1_mean" in study_cells and study_cells.val_clean_top1_mean.notna().any():
        at = [m for _, m, _ in metrics].index("val_top1")
        oracle = _pivot(study_cells, cell("val_clean_top1"), None, False, tex)
        oracle.index = [f"{ORACLE_ROW}: {v}" for v in oracle.index]
        out[at] = (f"{out[at][0]} The rows '{ORACLE_ROW}: …' score a noisy cell's same images on their clean "
                   "labels, which no choice reads.", pd.concat([out[at][1], oracle]).fillna("–"))
    out.append((f"{compared} difference to {baseline} (percentage points)\n{test}",
                _pivot(study_cells, delta, shown_delta, False, tex)))
    if "input_shift" in study_cells and study_cells.input_shift.notna().any():
        moved = _pivot(study_cells, refinement_text, None, False, tex)
        out.append(("How far the refinement moved at the last epoch (ICP variants, mean over seeds)\nMean |x_K − x| "
                    "in normalised input units; in brackets the feature MSE between clean and refined input per tap, "
                    "shallow to deep.", moved[(moved != "–").any(axis=1)]))
    if (study_cells.model.map(kind_of) == "classifier").all() and study_cells.compute_ce_epochs_mean.notna().any():
        out.append((f"Training compute per run in {baseline} epochs of its condition, and its ratio to {baseline}'s\n"
                    "Each method's FLOPs per step (icp/methods/options.py; counted where the count differs) summed "
                    "over its epochs; a FLOP-matched control's row gives the epochs and ratio it was given.",
                    _pivot(study_cells, compute_text(study_cells), None, False, tex)))
    return [*out, _cost_table(study_cells, baseline)]


def study_sections(study_cells: pd.DataFrame, tex: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """:func:`sections` per model kind: the generative study also holds the classifier runs that give FID its
    features, tabulated apart, after the VAE tables."""
    kinds = study_cells.model.map(kind_of)
    parts = [(k, study_cells[kinds == k]) for k in ("generative", "classifier") if (kinds == k).any()]
    if len(parts) < 2:
        return sections(study_cells, tex)
    return [(title if k == "generative" else f"Classifiers of this study (FID's feature networks): {title}", table)
            for k, part in parts for title, table in sections(part, tex)]


def not_in_table(runs: pd.DataFrame) -> list[str]:
    """One line per run that is not averaged in: missing, in flight, failed, diverged (``runs``: rows of
    :func:`icp.results.frames.runs_frame`)."""
    lines = []
    for _, r in runs[runs.status != "complete"].iterrows():
        err = r.get("error")
        lines.append(f"{r.status}: {r.run_id}" + (f" ({err})" if isinstance(err, str) and err else ""))
    return lines


def write_tables(study: str, runs: pd.DataFrame, all_cells: pd.DataFrame, out_dir: str | Path,
                 grid=None) -> list[Path]:
    """``<study>.csv``, ``.md``, ``.tex`` and ``.html`` for the runs of one study (``runs``: its rows of
    :func:`runs_frame`); the ``.html`` holds what the ``.md`` does, as a page of its own (no scripts, no links).
    With ``grid``, a study with tuned cells (:mod:`icp.tuning`) gets the ``Equal tuning`` section
    (:mod:`icp.results.tuning`); its tuning trials are that section's, not rows of the other tables (the ``.csv``
    keeps every cell)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = runs[[*CONDITION, "variant"]].drop_duplicates()
    all_study_cells = all_cells.merge(keys, on=[*CONDITION, "variant"])
    paths = [out_dir / f"{study}.{ext}" for ext in ("csv", "md", "tex", "html")]
    trial_runs = runs[tuning.is_trial(runs.variant)]
    runs = runs[~tuning.is_trial(runs.variant)]
    study_cells = all_study_cells[~tuning.is_trial(all_study_cells.variant)]
    analysis = getattr(grid, "analysis", None) or {}
    baseline = study_cells.baseline.iloc[0] if len(study_cells) else "ce"
    comparisons = power.family(analysis, study, zip(study_cells.variant, study_cells.baseline))
    family = family_rows(study_cells, runs, comparisons)
    study_cells = with_family(study_cells, family)  # Holm's family: the declared comparisons, per condition
    atomic.write(with_family(all_study_cells, family).to_csv(index=False), paths[0], mkdir=True)
    note, power_line = family_note(study, study_cells, runs, analysis, comparisons)
    missing = not_in_table(runs)
    title = f"Study `{study}`"
    intro = [f"{int(study_cells.n.sum())} complete runs in {len(study_cells)} cells; {len(missing)} not averaged in"
             + (" (listed at the end; a cell with runs left out says how many it averages)." if missing else "."),
             f"Holm's family: the study's primary comparisons, per condition (below); any other difference is "
             "exploratory (raw p).",
             f"Bold: a column's one best cell among those with every seed, only where its Holm-adjusted difference "
             f"to {baseline} is significant at {ALPHA:g}."]
    tuned = []
    if grid is not None and any(c.study == study for c in grid.tuned):
        tuned = tuning.sections(study, all_study_cells, pd.concat([runs, trial_runs]), grid)
        intro.append(f"Its {len(trial_runs)} tuning trial runs ({int((trial_runs.status == 'complete').sum())} "
                     "complete) are in the Equal tuning section only.")
    primary = [primary_section(family, study_cells)] if any(c.against != baseline for c in comparisons) else []
    sections = [*tuned, *primary, *study_sections(study_cells)]
    md = [f"# {title}", "", *(f"- {line}" for line in intro), ""]
    page = ["<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">',
            f"<title>{html.escape(f'Study {study}')}</title>", f"<style>{HTML_STYLE}</style></head>", "<body>",
            f"<h1>{html_text(title)}</h1>", "<ul>", *(f"<li>{html_text(line)}</li>" for line in intro), "</ul>"]
    for i, (heading, table) in enumerate(sections):
        head, _, about = heading.partition("\n")
        under = note if i == 0 else power_line  # the family in full once, its detectable difference under each
        md += [f"## {head}", "", *([about, ""] if about else []), md_table(table), "", f"*{under}*", ""]
        page += [f"<h2>{html_text(head)}</h2>", *([f"<p>{html_text(about)}</p>"] if about else []),
                 html_table(table), f"<p><em>{html_text(under)}</em></p>"]
    if missing:
        md += ["## Runs not in the tables", "", *(f"- {line}" for line in missing), ""]
        page += ["<h2>Runs not in the tables</h2>", "<ul>", *(f"<li>{html_text(line)}</li>" for line in missing),
                 "</ul>"]
    atomic.write("\n".join(md), paths[1], mkdir=True)
    # the header names the module that wrote the committed .tex files: kept as it was, so they are not rewritten
    tex = [f"% Study {study}: generated by icp.results from run records; needs \\usepackage{{booktabs}}", ""]
    tex_tuned = tuning.sections(study, all_study_cells, pd.concat([runs, trial_runs]), grid, tex=True) \
        if tuned else []
    tex_primary = [primary_section(family, study_cells, tex=True)] if primary else []
    for i, (heading, table) in enumerate([*tex_tuned, *tex_primary, *study_sections(study_cells, tex=True)]):
        head, _, about = heading.partition("\n")
        tex.append(tex_table(f"{study}: {head}. {about + ' ' if about else ''}{note if i == 0 else power_line}",
                             table))
    atomic.write("\n".join(tex), paths[2], mkdir=True)
    atomic.write("\n".join([*page, "</body>", "</html>", ""]), paths[3], mkdir=True)
    return paths


def primary_section(family: pd.DataFrame, study_cells: pd.DataFrame, tex: bool = False) -> tuple[str, pd.DataFrame]:
    """The declared comparisons × conditions: ``A vs B`` as ``+0.40 [−0.10, +0.90] (n=3, t-test p=…, Holm p=…)``."""
    labels = dict(zip(study_cells[list(CONDITION)].itertuples(index=False, name=None), condition_label(study_cells)))
    cells = family.assign(condition=[labels[c] for c in family[list(CONDITION)].itertuples(index=False, name=None)],
                          baseline="")  # A vs B: every row is a comparison, none is the baseline's own
    cells["text"] = [delta_text(r, tex) for _, r in cells.iterrows()]
    table = cells.pivot_table(index="comparison", columns="condition", values="text", aggfunc="first", sort=False)
    table = table.reindex(index=list(dict.fromkeys(cells.comparison)), columns=list(dict.fromkeys(cells.condition)))
    compared = "SSIM" if (family.model.map(kind_of) == "generative").all() else "Top-1"
    return (f"Primary comparisons: {compared} of A minus B\nDeclared in the grid before the runs; Holm's family per "
            "condition. Seeds paired: mean [95 % t interval] (n pairs, p, Holm p).", table.fillna("–"))


def family_note(study: str, study_cells: pd.DataFrame, runs: pd.DataFrame, analysis: dict,
                comparisons: Sequence) -> tuple[str, str]:
    """The lines under a study's tables: in full under the first (its primary family, then per condition its seeds
    and the smallest true difference the family detects at the grid's power after Holm, :mod:`icp.power`), and
    that per-condition part alone under each of the others."""
    level, wanted = power.settings(analysis)
    declared = bool(((analysis or {}).get("primary") or {}).get(study))
    m = len(comparisons)
    head = (f"Primary family ({'declared in the grid, analysis.primary.' + study if declared else 'default: every variant vs the baseline'}): "
            f"{m} comparison{'s' if m != 1 else ''}"
            + (f" ({'; '.join(map(str, comparisons))})" if declared else "") + ".")
    diffs = {}
    for kind, (_, metric) in BASELINE.items():
        if len(runs):
            diffs.update(power.paired_differences(runs[runs.model.map(kind_of) == kind], comparisons, metric))
    parts = []
    for cond, group in study_cells.groupby(list(CONDITION), sort=False):
        present = set(group.variant)
        m_here = sum(1 for c in comparisons if {c.variant, c.against} <= present)
        if not m_here:
            continue
        used = group[group.variant.isin({v for c in comparisons for v in (c.variant, c.against)})]
        n = int((used.n + used.diverged + used.not_final).max())
        spread = power.spread(analysis, tuple(cond), diffs.get(tuple(cond), []), comparisons)
        text = power.detectable_text(n, spread, m_here, level, wanted)
        target = power.target(analysis, cond[0], cond[1])
        if target is not None and spread is not None and spread.sd == spread.sd:
            need = power.seeds_for(target, spread.sd, m_here, level, wanted)
            text += f"; a true {target:g} pp needs {need if need else f'over {power.MAX_SEEDS}'} seeds"
        parts.append(f"{'/'.join(cond)} ({m_here} compared, n = {n} seeds): detectable at {wanted * 100:g} % "
                     f"power after Holm at {level:g}: {text}")
    per_condition = " ".join(p + "." for p in parts)
    return " ".join([head, per_condition]).strip(), per_condition or head
