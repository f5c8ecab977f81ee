"""Render: a table of text (variants × columns, as :mod:`icp.results.tables` builds it) written as markdown
(:func:`md_table`), LaTeX with booktabs (:func:`tex_table`, :func:`tex_escape`) and HTML (:func:`html_table`,
:func:`html_text`, :data:`HTML_STYLE`: a page with no scripts and no links, which the Snakemake report shows), and
``icp report``'s flat markdown, one row per cell (:func:`flat_markdown`).

Every markdown table of the package (these, the verdict's, the README's generated ones) is written by
:func:`markdown_table`: ``pandas.DataFrame.to_markdown`` (tabulate) in the layout the tables have always had, one
space each side of a cell, no padding, a ``|---|`` rule. The LaTeX and HTML stay written out: ``Styler.to_latex`` puts a
table-level command (``\\small``) after the caption, not before it, and ``Styler.to_html`` writes ``<th >`` and
one tag per line, so neither gives the committed tables' words.
"""
from __future__ import annotations

import html
import re
from typing import Iterable, Optional, Sequence

import pandas as pd

from icp.results.frames import BASELINE, CONDITION, kind_of
from icp.results.text import cell_text, delta_text


def _rule(widths, aligns) -> str:
    return "|" + "---|" * len(widths)


def markdown_table(head: Sequence, rows: Iterable[Sequence]) -> str:
    """A markdown (pipe) table: the ``head`` cells, a ``|---|`` rule, then one line per row, every cell as its
    ``str`` between ``| `` and `` |``, nothing padded or parsed as a number (``0.10`` stays ``0.10``); a ``|`` in a
    cell is escaped, so every row has the header's columns."""
    from tabulate import DataRow, TableFormat

    pipe = TableFormat(lineabove=None, linebelowheader=_rule, linebetweenrows=None, linebelow=None,
                       headerrow=DataRow("|", "|", "|"), datarow=DataRow("|", "|", "|"), padding=1,
                       with_header_hide=None)
    cell = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    frame = pd.DataFrame([[cell(c) for c in r] for r in rows], columns=range(len(head)), dtype=object)
    return frame.to_markdown(index=False, headers=[cell(h) for h in head], tablefmt=pipe, disable_numparse=True,
                             stralign=None, numalign=None)


def md_table(table: pd.DataFrame) -> str:
    """The table as markdown (:func:`markdown_table`), its index (the variants) first under ``variant``."""
    return markdown_table(["variant", *table.columns], ([v, *row.values] for v, row in table.iterrows()))


def tex_escape(text: str) -> str:
    """A cell's text for LaTeX: its special characters escaped and ±, ×, –, ⁿ, −, α as math; a cell already in
    LaTeX (bold, or with ``$``) only has ``%`` and ``_`` escaped."""
    if text.startswith("\\textbf{") or "$" in text:
        return text.replace("%", r"\%").replace("_", r"\_")
    return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
            .replace("#", r"\#").replace("±", r"$\pm$").replace("×", r"$\times$").replace("–", "--")
            .replace("ⁿ", r"$^n$").replace("−", "-").replace("α", r"$\alpha$"))


def tex_table(title: str, table: pd.DataFrame) -> str:
    """The table as a LaTeX ``table`` float with a booktabs ``tabular``, ``title`` its caption."""
    cols = "l" + "r" * len(table.columns)
    head = " & ".join(["variant", *(tex_escape(str(c)) for c in table.columns)]) + r" \\"
    body = [" & ".join([tex_escape(str(v)), *(tex_escape(str(x)) for x in row.values)]) + r" \\"
            for v, row in table.iterrows()]
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\small", rf"\caption{{{tex_escape(title)}}}",
                      rf"\begin{{tabular}}{{{cols}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}", ""])


# the metrics ``icp report`` shows, per model kind (:func:`kind_of`)
REPORT_METRICS = {"classifier": ("top1", "macro_f1", "ece"), "generative": ("ssim", "fid_recon", "elbo")}


def flat_markdown(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> str:
    """One row per cell of :func:`icp.results.cells.cells` (``icp report``): its factors, n, the metrics as mean ± std (in %) and the
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
    return markdown_table(head, ([*(r[k] for k in keys), r["n"], *(cell_text(r, m, False).rsplit(" (", 1)[0]
                                                                    for m in metrics), delta_text(r, False)]
                                 for _, r in table.iterrows()))


def html_text(text: str) -> str:
    """A line of the markdown tables as HTML: escaped, with their ``**bold**`` and ```code``` marks."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def html_table(table: pd.DataFrame) -> str:
    """The table as an HTML ``<table>``, its index (the variants) first under ``variant``."""
    head = "".join(f"<th>{html_text(str(c))}</th>" for c in ["variant", *table.columns])
    rows = ["<tr>" + "".join(f"<td>{html_text(str(v))}</td>" for v in [variant, *row.values]) + "</tr>"
            for variant, row in table.iterrows()]
    return "\n".join(["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>"])


HTML_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em;max-width:80em}"
              "h1{font-size:1.4em}h2{font-size:1.05em;margin-top:1.6em}"
              "table{border-collapse:collapse}th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}"
              "th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}")
