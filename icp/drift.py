"""Drift or breakage? ``icp drift``: the headline numbers of a summary beside the ones committed to git.

After ``dvc repro`` a user sees every table move a little: the same code and seeds on another CPU (or another
BLAS, another thread count) sum floats in another order, and a few epochs on a small subset amplify that. What
tells this apart from a broken install is how far each number moved against how far the seeds themselves spread.
For each (dataset, model, scenario, variant) of the summary (tuning trials left out: the tables show their chosen
finals) this compares its headline metric (top-1 in %, SSIM for the VAE; :func:`icp.results.summary.headline_of`),
per seed and as a mean over seeds, with the summary at a git revision (``HEAD`` by default):

* ``unchanged``: every seed's value is the same as committed (same CPU kind and code: the CPU runs are
  deterministic);
* ``within the seeds' spread``: the mean moved by at most what changing the seeds alone would move it, about two
  standard errors of a difference of means: 2·σ·√(1/n_committed + 1/n_now), with σ the seed-to-seed standard
  deviation of that metric pooled over every variant of the committed summary (one variant's two seeds estimate
  it too poorly: a pair that happened to agree would call any move breakage): float-order drift, not a different
  result;
* ``outside the seeds' spread``: it moved by more; with the CPU and code unchanged that is breakage, so check the
  install (``pip check``, the pinned versions) before reading the tables;
* ``one seed``: the committed mean has no spread to judge against.

The first line names the CPU (``device_name`` of the records) and code commit of both summaries. The exit status
is 1 when any number lies outside the spread, else 0, so a script can rely on it.
"""
from __future__ import annotations

import io
import math
import subprocess
from pathlib import Path
from typing import Optional

import pandas as pd

from icp.results.frames import read_summary
from icp.results.summary import headline_of
from icp.results.text import scale_digits
from icp.results.tuning import is_trial
from icp.schema import ConfigError

KEY = ["dataset", "model", "scenario", "variant"]
SPREAD = 2.0  # a move of the mean within SPREAD standard errors (from the pooled seed spread) is float-order drift


def committed_summary(path: str | Path, rev: str = "HEAD") -> pd.DataFrame:
    """The summary file ``path`` as git holds it at ``rev`` (one-line ConfigError if it does not)."""
    path = Path(path)
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent if path.parent.is_dir() else ".",
                             capture_output=True, text=True, timeout=60)
        root = Path(top.stdout.strip())
        rel = path.resolve().relative_to(root.resolve())
        shown = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=root, capture_output=True,
                               timeout=60)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"drift: cannot read {path} from git ({exc})") from None
    if top.returncode or shown.returncode:
        raise ConfigError(f"drift: {path} is not in git at {rev} "
                          f"({(shown.stderr or top.stderr or b'').decode(errors='replace').strip().splitlines()[-1:]})")
    return read_summary(io.BytesIO(shown.stdout))


def headline_values(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per complete, non-trial run: KEY, seed, its headline metric's name and value as the tables show it."""
    done = summary[(summary["status"] == "complete") & ~is_trial(summary["variant"])].copy()
    done["metric"] = done["model"].map(headline_of)
    done["value"] = [float(r[r["metric"]]) * scale_digits(r["metric"])[0] for _, r in done.iterrows()]
    return done[[*KEY, "seed", "metric", "value"]]


def _kind(summary: pd.DataFrame) -> str:
    """The machines of a summary: device names, and the CPU kernels torch used where the records say (older
    summaries do not)."""
    names = sorted(set(summary["device_name"].dropna().astype(str))) or ["unknown CPU"]
    kernels = sorted(set(summary.get("cpu_capability", pd.Series(dtype=str)).dropna().astype(str)))
    return ", ".join(names) + (f" ({'/'.join(kernels)} kernels)" if kernels else " (kernels not recorded)")


def _machine(summary: pd.DataFrame) -> str:
    commits = sorted({str(c)[:7] for c in summary.get("git_commit", pd.Series(dtype=str)).dropna()})
    return f"{_kind(summary)}, code {', '.join(commits) or 'unknown'}"


def pooled_sd(values: pd.DataFrame) -> dict[str, float]:
    """Per metric, the seed-to-seed standard deviation pooled over the variants with two seeds or more:
    √(Σ (n_i − 1)·s_i² / Σ (n_i − 1))."""
    out = {}
    for metric, part in values.groupby("metric"):
        groups = [g["value"] for _, g in part.groupby(KEY) if g["value"].count() > 1]
        dof = sum(g.count() - 1 for g in groups)
        out[metric] = math.sqrt(sum((g.count() - 1) * g.var(ddof=1) for g in groups) / dof) if dof else math.nan
    return out


def _stats(values: pd.Series) -> tuple[float, float, int]:
    n = int(values.count())
    return (float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)


def compare(committed: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """Per KEY: the committed and current mean ± sd (n), the change of the mean, the largest change of one seed,
    and the verdict (module docstring)."""
    old, new = headline_values(committed), headline_values(now)
    sigma = pooled_sd(old)
    rows = []
    keys = pd.concat([old[KEY], new[KEY]]).drop_duplicates()
    for key in keys.itertuples(index=False):
        a = old[(old[KEY] == pd.Series(key, index=KEY)).all(axis=1)]
        b = new[(new[KEY] == pd.Series(key, index=KEY)).all(axis=1)]
        (ma, sa, na), (mb, sb, nb) = _stats(a["value"]), _stats(b["value"])
        paired = a.merge(b, on="seed", suffixes=("_old", "_new"))
        per_seed = (paired["value_new"] - paired["value_old"]).abs()
        delta = mb - ma
        metric = (a if na else b)["metric"].iloc[0]
        bound = SPREAD * sigma.get(metric, math.nan) * math.sqrt(1 / na + 1 / nb) if na and nb else math.nan
        if not na or not nb:
            verdict = "new" if not na else "gone"
        elif len(paired) == na == nb and (per_seed <= 1e-9).all():
            verdict = "unchanged"
        elif not bound == bound:
            verdict = "one seed"
        elif abs(delta) <= bound:
            verdict = "within the seeds' spread"
        else:
            verdict = "outside the seeds' spread"
        rows.append({"condition": "/".join(key[:3]), "variant": key[3], "metric": metric,
                     "committed": ma, "committed_sd": sa, "committed_n": na, "now": mb, "now_sd": sb, "now_n": nb,
                     "delta": delta, "max_seed_delta": per_seed.max() if len(per_seed) else math.nan,
                     "bound": bound, "verdict": verdict})
    return pd.DataFrame(rows)


def _ms(mean: float, sd: float, n: int) -> str:
    if not n:
        return "–"
    return f"{mean:.2f} ± {sd:.2f} ({n})" if sd == sd else f"{mean:.2f} ({n})"


def report(path: str | Path, rev: str = "HEAD") -> tuple[str, int]:
    """The text ``icp drift`` prints and its exit status."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"drift: {path} not found: run `dvc repro` (or `icp summarize`) first")
    committed, now = committed_summary(path, rev), read_summary(path)
    table = compare(committed, now)
    lines = [f"drift: {path} now ({_machine(now)}) against {rev} ({_machine(committed)}); headline metric per "
             f"variant (top-1 and the VAE's SSIM in %, as the tables show them), mean ± sd over seeds (n); "
             f"'within' = the mean moved by at most {SPREAD:g} standard errors, from the seed sd pooled over the "
             f"committed variants ({', '.join(f'{m} {v:.2f}' for m, v in pooled_sd(headline_values(committed)).items())})"]
    shown = pd.DataFrame({
        "condition": table["condition"], "variant": table["variant"], "metric": table["metric"],
        "committed": [_ms(r.committed, r.committed_sd, r.committed_n) for r in table.itertuples()],
        "now": [_ms(r.now, r.now_sd, r.now_n) for r in table.itertuples()],
        "Δ mean": [f"{d:+.2f}" if d == d else "" for d in table["delta"]],
        "bound": [f"{b:.2f}" if b == b else "" for b in table["bound"]],
        "verdict": table["verdict"]})
    lines.append(shown.to_string(index=False))
    moved = table[table["verdict"] != "unchanged"]
    outside = table[table["verdict"] == "outside the seeds' spread"]
    same_cpu = _kind(now) == _kind(committed) and "not recorded" not in _kind(committed)
    if moved.empty:
        verdict = "nothing moved: the same numbers as committed"
    elif outside.empty:
        cause = (" (the same CPU and kernels: another thread count or library build?)" if same_cpu else
                 " of another CPU or other kernels")
        verdict = (f"{len(moved)} of {len(table)} moved, none beyond the seeds' spread: float-order drift{cause}, "
                   "not breakage")
    else:
        verdict = (f"{len(outside)} of {len(table)} moved beyond the seeds' spread "
                   f"({', '.join(outside['condition'] + ' ' + outside['variant'])}): "
                   + ("with the same CPU and kernels this looks like breakage: check the install (`pip check`, "
                      "environment.yml's pins) and the code changes since " + rev if same_cpu else
                      "another CPU or other kernels may explain part of it, but not usually this much: check the install "
                      "(`pip check`, environment.yml's pins) before reading the tables"))
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines), (1 if len(outside) else 0)


def main(path: str | Path, rev: str = "HEAD", out: Optional[io.TextIOBase] = None) -> int:
    text, code = report(path, rev)
    print(text, file=out)
    return code
