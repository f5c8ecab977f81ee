"""From run records to the paper's tables: one row per run, one cell per condition, one table file per study.

Everything here reads ``record.json`` files (:mod:`icp.records`) and nothing else; ``icp report``, the Snakefile's
aggregation rules and the DVC laptop pipeline all call it.

* :func:`runs_frame`: one row per run. Given a grid, every run of the grid has a row, with status ``missing``
  when it has no record yet, so a half-finished sweep is visible run by run; given paths, one row per record
  found. Columns: the run's factors, its status, last-epoch and best-epoch test metrics, wall time, images/s,
  device hours, and where it came from (code version, git commit, job ids, error).
* :func:`cells`: per condition (dataset, model, scenario) and variant (method with its non-default options), the
  mean and standard deviation (ddof 1) over seeds of the ``complete`` runs, with ``n``; ``diverged`` runs are
  counted and never averaged in; runs missing, failed or in flight are counted as ``not_final``. Each variant is
  compared with the baseline under the same condition (``ce`` on top-1 for classifiers, ``vae`` on SSIM for the
  generative study): the mean difference over the seeds both have, and a two-sided paired t-test
  (``scipy.stats.ttest_rel``) over those seeds (p is empty below two pairs).
* :func:`write_tables`: ``<study>.csv`` (the cells, machine-readable), ``<study>.md`` and ``<study>.tex`` (booktabs):
  test top-1 at the last epoch (the headline), at the best epoch (labelled with what selected it), macro-F1, ECE,
  the difference to ``ce`` with its p-value, and a cost table (images/s and its ratio to ``ce``, GPU-hours). The
  best mean of each column is bold. Runs that are not in a table are listed by run id under it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from icp import grid as grid_mod
from icp import jsonfile

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
    """(test top-1, epoch, selected by) of the best epoch: by validation where the run has a validation split,
    else by test top-1 itself (optimistic: labelled so)."""
    if rec.get("best"):
        return rec["best"]["test"].get("top1"), rec["best"]["epoch"], "val"
    eps = [e for e in rec.get("epochs") or [] if (e.get("test") or {}).get("top1") is not None]
    if not eps:
        return None, None, ""
    e = max(eps, key=lambda e: e["test"]["top1"])
    return e["test"]["top1"], e["epoch"], "test"


def run_row(rec: Optional[dict], run=None, path: Optional[str] = None) -> dict:
    """The summary row of one run: from its record, or (``rec`` None) the grid's factors with status missing."""
    if rec is None:
        return {"run_id": run.run_id, "studies": ";".join(run.studies), "dataset": run.dataset, "model": run.model,
                "scenario": run.scenario, "method": run.method,
                "variant": grid_mod.variant(run.method, run.options),
                "seed": run.seed, "status": "missing", "path": run.run_dir}
    cfg = rec["config"]
    last = (rec.get("last") or {}).get("test") or {}
    best, best_epoch, best_by = _best(rec)
    env = rec.get("env") or {}
    hours = (rec.get("wall_time_s") or 0.0) / 3600
    options = {k: v for k, v in (rec.get("method_options") or {}).items() if k not in PER_RUN_OPTIONS}
    return {
        "run_id": rec.get("run_id"), "studies": ";".join(run.studies) if run is not None else "",
        "dataset": rec["dataset"], "model": rec["model"], "scenario": _scenario_tag(cfg["scenario"]),
        "method": rec["method"], "variant": variant_of(rec["method"], options), "seed": rec["seed"],
        "status": rec["status"], "epochs": cfg["train"]["epochs"], "epochs_done": len(rec.get("epochs") or []),
        **{m: last.get(m) for m in METRICS},
        "best_top1": best, "best_epoch": best_epoch, "best_by": best_by,
        "wall_time_s": rec.get("wall_time_s"), "images_per_s": rec.get("images_per_s"),
        "device": env.get("device"), "device_name": env.get("device_name"), "hours": hours,
        "gpu_hours": hours if str(env.get("device", "")).startswith("cuda") else 0.0,
        "method_options": json.dumps(options, sort_keys=True), "fid_features": rec.get("fid_features"),
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
            rows.append(run_row(jsonfile.read(path / "record.json"), run, str(path)))
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
    for _, run in runs[runs.status != "missing"].iterrows():
        rec = jsonfile.read(Path(run.path) / "record.json")
        for e in (rec or {}).get("epochs") or []:
            test = e.get("test") or {}
            rows.append({**{k: run[k] for k in keep if k in run}, "epoch": e["epoch"],
                         **{f"test_{m}": test.get(m) for m in METRICS},
                         "train_loss": (e.get("train") or {}).get("loss"), "lr": e.get("lr"),
                         "time_s": e.get("time_s"), "images_per_s": e.get("images_per_s"),
                         **{f"diag.{k}": v for k, v in (e.get("diagnostics") or {}).items()}})
    return pd.DataFrame(rows)


def metrics_tree(all_cells: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """The DVC metric: ``{study: {"dataset/model/scenario": {variant: {top1, top1_std, n, ...}}}}`` plus run counts."""
    tree: dict = {"runs": {s: int(n) for s, n in runs.status.value_counts().items()}}
    for study in sorted({s for v in runs.studies.fillna("") for s in v.split(";") if s}):
        keys = study_runs(runs, study)[[*CONDITION, "variant"]].drop_duplicates()
        for _, c in all_cells.merge(keys, on=[*CONDITION, "variant"]).iterrows():
            leaf = {"n": int(c.n)}
            for k in ("top1_mean", "top1_std", "best_top1_mean", "macro_f1_mean", "ece_mean", "ssim_mean",
                      "ssim_std", "fid_recon_mean", "fid_prior_mean", "elbo_mean", "delta", "p_value", "images_per_s"):
                if c[k] == c[k]:
                    leaf[k.removesuffix("_mean")] = round(float(c[k]), 6)
            tree.setdefault(study, {}).setdefault("/".join(str(c[k]) for k in CONDITION), {})[c.variant] = leaf
    return tree


def curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Learning curves for DVC's plots: per condition and variant (file name ``dataset_model_scenario_variant``),
    test top-1 per epoch, mean and std over the complete runs, with n."""
    out = {}
    done = epochs[epochs.status == "complete"] if not epochs.empty else epochs
    for key, g in done.groupby([*CONDITION, "variant"], sort=False):
        name = "_".join(str(k) for k in key).replace("/", "-")
        out[name] = g.groupby("epoch").agg(test_top1=("test_top1", "mean"), test_top1_std=("test_top1", "std"),
                                           n=("seed", "nunique")).reset_index()
    return out


def summarize(grid, out_dir: str | Path, runs_dir: Optional[str] = None) -> dict[str, Path]:
    """``summary.csv`` (one row per grid run), ``epochs.csv``, ``metrics.json`` (DVC's metric) and ``curves/``
    (DVC's plots) under ``out_dir``."""
    import shutil

    out_dir = Path(out_dir)
    runs = runs_frame(grid, runs_dir=runs_dir)
    paths = {"summary": write_summary(runs, out_dir / "summary.csv"), "epochs": out_dir / "epochs.csv",
             "metrics": out_dir / "metrics.json", "curves": out_dir / "curves"}
    epochs = epochs_frame(runs)
    _atomic_text(epochs.to_csv(index=False), paths["epochs"])
    _atomic_text(json.dumps(metrics_tree(cells(runs), runs), indent=1, sort_keys=True), paths["metrics"])
    shutil.rmtree(paths["curves"], ignore_errors=True)
    for name, frame in curves(epochs).items():
        _atomic_text(frame.to_csv(index=False), paths["curves"] / f"{name}.csv")
    paths["curves"].mkdir(parents=True, exist_ok=True)
    return paths


def read_summary(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"studies": str, "job_ids": str, "git_commit": str, "error": str})


def _atomic_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ cells
def _paired(variant: pd.DataFrame, base: pd.DataFrame, metric: str = "top1") -> tuple[float, float, int]:
    """(mean difference, two-sided paired t-test p, pairs) over the seeds both have complete."""
    from scipy import stats

    pairs = variant.set_index("seed")[metric].to_frame("v").join(base.set_index("seed")[metric].to_frame("b"),
                                                                 how="inner").dropna()
    if pairs.empty:
        return math.nan, math.nan, 0
    diff = float((pairs.v - pairs.b).mean())
    if len(pairs) < 2:
        return diff, math.nan, len(pairs)
    return diff, float(stats.ttest_rel(pairs.v, pairs.b).pvalue), len(pairs)


def cells(runs: pd.DataFrame, extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per condition and variant: n, mean and std over seeds of the complete runs, diverged and not-final counts,
    cost, and the paired comparison with ``ce`` under the same condition. ``extra_keys`` (``epochs`` for records
    that do not come from one grid) split conditions further."""
    condition = [*CONDITION, *extra_keys]
    keys = [*condition, "variant"]
    out = []
    complete = runs[runs.status == "complete"]
    for key, group in runs.groupby(keys, sort=False):
        done = group[group.status == "complete"]
        row = dict(zip(keys, key))
        row["method"] = group.method.iloc[0]
        row.update(n=len(done), diverged=int((group.status == "diverged").sum()),
                   not_final=int((~group.status.isin(["complete", "diverged"])).sum()))
        for m in (*METRICS, "best_top1"):
            values = done[m].astype(float) if m in done else pd.Series(dtype=float)
            row[f"{m}_mean"] = values.mean() if len(values) else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row["best_by"] = ",".join(sorted(set(done.best_by.dropna()) - {""})) if "best_by" in done else ""
        if "epochs" not in extra_keys:
            row["epochs"] = ",".join(str(int(e)) for e in sorted(set(done.epochs.dropna()))) if "epochs" in done \
                else ""
        row["images_per_s"] = done.images_per_s.astype(float).mean() if len(done) else math.nan
        row["gpu_hours"] = float(done.gpu_hours.sum()) if len(done) else 0.0
        row["hours"] = float(done.hours.sum()) if len(done) else 0.0
        row["devices"] = ",".join(sorted(set(done.device_name.dropna()))) if len(done) else ""
        row["fid_features"] = ",".join(sorted({_fid_kind(v) for v in done.fid_features.dropna()})) \
            if "fid_features" in done else ""
        baseline, metric = BASELINE[kind_of(row["model"])]
        row.update(baseline=baseline, delta_of=metric)
        base = complete[(complete[condition] == pd.Series(dict(zip(condition, key)))).all(axis=1)
                        & (complete.variant == baseline)]
        if row["variant"] == baseline or base.empty:
            row.update(delta=math.nan, p_value=math.nan, pairs=0, speed_vs_baseline=math.nan)
        else:
            row["delta"], row["p_value"], row["pairs"] = _paired(done, base, metric)
            row["speed_vs_baseline"] = row["images_per_s"] / base.images_per_s.astype(float).mean()
        if row["variant"] == baseline:
            row["speed_vs_baseline"] = 1.0
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ tables
def _pct(value: float, scale: float = 100.0, digits: int = 2) -> str:
    return "" if value != value else f"{value * scale:.{digits}f}"


def _cell_text(row, metric: str, tex: bool) -> str:
    scale, digits = (1.0, 3) if metric == "nll" else (1.0, 2) if metric in RAW else (100.0, 2)
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if row["n"] == 0 or mean != mean:
        return "–"
    pm = r" $\pm$ " if tex else " ± "
    text = _pct(mean, scale, digits) + (pm + _pct(std, scale, digits) if std == std else "")
    return f"{text} ({row['n']})"


def _condition_label(study_cells: pd.DataFrame) -> pd.Series:
    varying = [c for c in CONDITION if study_cells[c].nunique() > 1] or ["dataset"]
    return study_cells[varying].astype(str).agg("/".join, axis=1)


def _pivot(study_cells: pd.DataFrame, text, best_of: Optional[str], lower: bool, tex: bool) -> pd.DataFrame:
    """Variants × conditions of ``text(row)``, the best ``best_of`` mean of each column in bold."""
    c = study_cells.assign(condition=_condition_label(study_cells))
    c["text"] = [text(r) for _, r in c.iterrows()]
    if best_of is not None:
        for _, idx in c.groupby("condition").groups.items():
            col = c.loc[idx, best_of].astype(float)
            if col.notna().any():
                best = col.idxmin() if lower else col.idxmax()
                c.loc[best, "text"] = rf"\textbf{{{c.loc[best, 'text']}}}" if tex else f"**{c.loc[best, 'text']}**"
    table = c.pivot_table(index="variant", columns="condition", values="text", aggfunc="first", sort=False)
    return table.reindex(index=list(dict.fromkeys(c.variant)), columns=list(dict.fromkeys(c.condition))).fillna("–")


def _delta_text(row, tex: bool) -> str:
    if row["variant"] == row["baseline"] or row["delta"] != row["delta"]:
        return "–"
    p = "" if row["p_value"] != row["p_value"] else f", p={row['p_value']:.3f}"
    scale = 1.0 if row["delta_of"] in RAW else 100.0
    return f"{row['delta'] * scale:+.2f} ({row['pairs']}{p})"


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


def sections(study_cells: pd.DataFrame, tex: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """The tables of one study, each (title, variants × conditions of text)."""
    cell = lambda m: (lambda r: _cell_text(r, m, tex))  # noqa: E731
    baseline = study_cells.baseline.iloc[0] if len(study_cells) else "ce"
    if (study_cells.model.map(kind_of) == "generative").all():
        out = [
            ("Test SSIM (%) of reconstructions at the last epoch: mean ± std over seeds (n)",
             _pivot(study_cells, cell("ssim"), "ssim_mean", False, tex)),
            (f"FID of test reconstructions (lower is better; {_fid_caption(study_cells)})",
             _pivot(study_cells, cell("fid_recon"), "fid_recon_mean", True, tex)),
            ("FID of prior samples against the test images (lower is better; same features)",
             _pivot(study_cells, cell("fid_prior"), "fid_prior_mean", True, tex)),
            ("Test ELBO per image (nats, up to a constant; higher is better)",
             _pivot(study_cells, cell("elbo"), "elbo_mean", False, tex)),
            (f"SSIM difference to {baseline} (percentage points; seeds paired, two-sided paired t-test p)",
             _pivot(study_cells, lambda r: _delta_text(r, tex), "delta", False, tex)),
        ]
    else:
        by = ",".join(sorted(set(",".join(study_cells.best_by).split(",")) - {""})) or "val"
        selected = {"val": "the validation split", "test": "test top-1 itself (optimistic)"}.get(by, by)
        out = [
            ("Test top-1 (%) at the last epoch: mean ± std over seeds (n)",
             _pivot(study_cells, cell("top1"), "top1_mean", False, tex)),
            (f"Test top-1 (%) at the best epoch, selected by {selected}",
             _pivot(study_cells, cell("best_top1"), "best_top1_mean", False, tex)),
            ("Test macro-F1 (%) at the last epoch", _pivot(study_cells, cell("macro_f1"), "macro_f1_mean", False, tex)),
            ("Test ECE (%, lower is better) at the last epoch", _pivot(study_cells, cell("ece"), "ece_mean", True, tex)),
            (f"Top-1 difference to {baseline} (percentage points; seeds paired, two-sided paired t-test p)",
             _pivot(study_cells, lambda r: _delta_text(r, tex), "delta", False, tex)),
        ]
    cost = study_cells.assign(condition=_condition_label(study_cells))
    cost = cost.groupby("variant", sort=False).agg(images_per_s=("images_per_s", "mean"),
                                                    speed_vs_baseline=("speed_vs_baseline", "mean"),
                                                    gpu_hours=("gpu_hours", "sum"), hours=("hours", "sum"),
                                                    runs=("n", "sum"), devices=("devices", "first"))
    cost_text = pd.DataFrame({
        "images/s": cost.images_per_s.map(lambda v: "–" if v != v else f"{v:,.0f}"),
        f"× {baseline} speed": cost.speed_vs_baseline.map(lambda v: "–" if v != v else f"{v:.2f}"),
        "GPU-hours": cost.gpu_hours.map(lambda v: f"{v:.2f}"),
        "device-hours": cost.hours.map(lambda v: f"{v:.2f}"),
        "runs": cost.runs.astype(int).astype(str), "devices": cost.devices.fillna("")})
    out.append((f"Cost: training images/s (mean over conditions), its ratio to {baseline}, GPU- and device-hours "
                "(sums)",
                cost_text))
    return out


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
            .replace("#", r"\#").replace("±", r"$\pm$").replace("×", r"$\times$").replace("–", "--"))


def _tex_table(title: str, table: pd.DataFrame) -> str:
    cols = "l" + "r" * len(table.columns)
    head = " & ".join(["variant", *(_tex_escape(str(c)) for c in table.columns)]) + r" \\"
    body = [" & ".join([_tex_escape(str(v)), *(_tex_escape(str(x)) for x in row.values)]) + r" \\"
            for v, row in table.iterrows()]
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\small", rf"\caption{{{_tex_escape(title)}}}",
                      rf"\begin{{tabular}}{{{cols}}}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}", ""])


def flat_markdown(table: pd.DataFrame, metrics: Sequence[str] = ("top1", "macro_f1", "ece")) -> str:
    """One row per cell of :func:`cells` (``icp report``): its factors, n, the metrics as mean ± std (in %) and the
    difference to ce with its p-value."""
    if table.empty:
        return "(no runs)"
    keys = [k for k in (*CONDITION, "variant", "epochs") if k in table]
    head = [*keys, "n", *metrics, "Δ vs baseline (pairs, p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join([*(str(r[k]) for k in keys), str(r["n"]),
                                        *(_cell_text(r, m, False).rsplit(" (", 1)[0] for m in metrics),
                                        _delta_text(r, False)]) + " |")
    return "\n".join(lines)


def not_in_table(runs: pd.DataFrame) -> list[str]:
    """One line per run that is not averaged in: missing, in flight, failed, diverged."""
    lines = []
    for _, r in runs[runs.status != "complete"].iterrows():
        err = r.get("error")
        lines.append(f"{r.status}: {r.run_id}" + (f" ({err})" if isinstance(err, str) and err else ""))
    return lines


def write_tables(study: str, runs: pd.DataFrame, all_cells: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``<study>.csv``, ``.md`` and ``.tex`` for the runs of one study (``runs``: its rows of :func:`runs_frame`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = runs[[*CONDITION, "variant"]].drop_duplicates()
    study_cells = all_cells.merge(keys, on=[*CONDITION, "variant"])
    paths = [out_dir / f"{study}.{ext}" for ext in ("csv", "md", "tex")]
    _atomic_text(study_cells.to_csv(index=False), paths[0])
    missing = not_in_table(runs)
    md = [f"# Study `{study}`", "",
          f"{int(study_cells.n.sum())} complete runs in {len(study_cells)} cells; "
          f"{len(missing)} runs not averaged in (listed at the end).", ""]
    for title, table in study_sections(study_cells):
        md += [f"## {title}", "", _md_table(table), ""]
    if missing:
        md += ["## Runs not in the tables", "", *(f"- {line}" for line in missing), ""]
    _atomic_text("\n".join(md), paths[1])
    tex = [f"% Study {study}: generated by icp.aggregate from run records; needs \\usepackage{{booktabs}}", ""]
    for title, table in study_sections(study_cells, tex=True):
        tex.append(_tex_table(f"{study}: {title}", table))
    _atomic_text("\n".join(tex), paths[2])
    return paths


def write_summary(runs: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    _atomic_text(runs.to_csv(index=False), path)
    return path


def study_runs(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    return runs[runs.studies.fillna("").str.split(";").map(lambda s: study in s)]
