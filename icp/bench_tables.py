"""``python -m icp.bench_tables``: rewrite the committed bench tables of ``icp grid --cost`` from the bench outputs
under ``results/reference`` (numbers are never typed by hand).

* ``results/reference/<gpu>/throughput.csv`` (:func:`build_table`): the ``icp bench`` rows of the outputs that
  :data:`SOURCES` lists for the GPU, one per model, method, data and configuration (the first source wins), plus a
  baseline row (``estimated``) for each model measured only in another configuration (rule 4 of :mod:`icp.cost`).
* ``results/reference/<gpu>/packing.csv`` (:func:`build_packing`): the aggregate images/s of k runs at once that
  the packing logs of :data:`PACKING_SOURCES` measured (``tools/gpu_lease.sh``).

:mod:`icp.throughput` reads them.
"""
from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path
from typing import Optional

from icp.throughput import EAGER, PACKING_TABLE, REFERENCE, REFERENCE_MODEL, REPO, TABLE

COLUMNS = ("gpu", "model", "method", "data", "config", "batch", "img_per_s", "estimated", "source")
BENCH_COLUMNS = ("model", "method", "data", "device", "batch", "step_ms", "img_per_s", "ratio")  # header-less files
# (bench output under results/reference, its section or None for the whole file, configuration), first wins when
# two give the same model, method, data and configuration. Left out: bench_fp32.txt, bench_compile_ro.txt and
# bench_compile_ro_fmnist.txt (single-round predecessors of bench_rounds.txt and icp_bench_compile_ro.txt), and
# the bf16 / channels_last / compile=default tables (no grid trains so).
SOURCES: dict[str, list[tuple[str, Optional[str], str]]] = {
    "h100": [
        ("h100/bench_all_methods_fp32.txt", None, EAGER),
        ("h100/bench_rounds.txt", "train.compile=none", EAGER),
        ("h100/bench_rounds.txt", "train.compile=reduce-overhead", "compile=reduce-overhead"),
        ("h100/bench_rounds.txt", "--models resnet56 preact_resnet18 --steps 100, train.compile=reduce-overhead",
         "compile=reduce-overhead"),
        ("h100/icp_bench_compile_ro.txt", None, "compile=reduce-overhead"),
    ],
    "cpu": [("cpu_bench_all_methods.txt", None, EAGER)],
}
# Packing measured on a lent GPU: (the packing output of tools/gpu_lease.sh, which call of the GPU made it); the
# first row of each call ran on a just-started GPU (see icp.cost's docstring). The H200's first call measured icp-adam's
# k = 1 only (its k = 2 ran out of time): its throughput.log holds it.
PACKING_SOURCES: dict[str, list[tuple[str, str]]] = {
    "h200": [("h200/fmnist-5ep/throughput.log", "call 1"), ("h200/lease2/throughput.log", "call 2")],
}
PACKING_COLUMNS = ("gpu", "model", "method", "data", "config", "k", "aggregate_img_per_s", "cold", "source")


def parse_bench(text: str) -> list[tuple[Optional[str], list[dict]]]:
    """An ``icp bench`` output (or several, as ``== title`` sections) as [(section title or None, rows)]. A table
    without its header line is read with :data:`BENCH_COLUMNS`; ``#`` lines are comments."""
    sections: list[tuple[Optional[str], list[dict]]] = [(None, [])]
    columns = BENCH_COLUMNS
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("=="):
            sections.append((line.strip("= ").strip(), []))
            columns = BENCH_COLUMNS
            continue
        tokens = line.split()
        if tokens[0] == "model":
            columns = tuple("ratio" if t == "ratio_to_ce" else t for t in tokens)
            continue
        if len(tokens) == len(columns):
            sections[-1][1].append(dict(zip(columns, tokens)))
    return [(title, rows) for title, rows in sections if rows]


def build_table(gpu: str) -> list[dict]:
    """The rows of ``results/reference/<gpu>/throughput.csv`` from the bench outputs of :data:`SOURCES`, plus a
    baseline row (``estimated``) for each model measured only in another configuration (rule 4)."""
    out: list[dict] = []
    seen = set()
    for path, section, cfg in SOURCES[gpu]:
        found = [rows for title, rows in parse_bench((REFERENCE / path).read_text()) if title == section]
        if not found:
            raise ValueError(f"{path}: no section {section!r}")
        for r in found[0]:
            key = (r["model"], r["method"], r["data"], cfg)
            if key not in seen:
                seen.add(key)
                out.append({"gpu": gpu, "model": r["model"], "method": r["method"], "data": r["data"], "config": cfg,
                            "batch": int(r["batch"]), "img_per_s": float(r["img_per_s"]), "estimated": 0,
                            "source": path + (f" [{section}]" if section else "")})
    for r in list(out):
        if r["config"] == EAGER or r["method"] != "ce" or (r["model"], "ce", r["data"], EAGER) in seen:
            continue
        file = r["source"].split(" [")[0]
        ref = {c: x for x in out for c in (EAGER, r["config"]) if x["config"] == c and x["model"] == REFERENCE_MODEL
               and x["method"] == "ce" and x["data"] == r["data"] and x["source"].split(" [")[0] == file}
        if len(ref) == 2:
            factor = ref[EAGER]["img_per_s"] / ref[r["config"]]["img_per_s"]
            seen.add((r["model"], "ce", r["data"], EAGER))
            out.append({**r, "config": EAGER, "img_per_s": round(r["img_per_s"] * factor, 1), "estimated": 1,
                        "source": f"{r['source']} x {REFERENCE_MODEL} ce {EAGER}/{r['config']} "
                                  f"({ref[EAGER]['img_per_s']:g}/{ref[r['config']]['img_per_s']:g})"})
    return out


def parse_packing(text: str, gpu: str, source: str) -> list[dict]:
    """The k rows of a ``tools/gpu_reference.py packing`` log (``packing: <method> steps of <run id> (<recipe>)
    [<set>], ...`` then ``  k=<k>: <img/s> img/s`` lines); the first k row of the file is ``cold``."""
    rows, head = [], None
    for line in text.splitlines():
        m = re.match(r"packing: (\S+) steps of (\S+) \((\S+)\)\s*(.*?), [\d.]+ s per k", line)
        if m:
            compiled = re.search(r"train\.compile=(\S+)", m[4])
            head = {"method": m[1], "model": m[2].split("/")[1], "data": m[2].split("/")[0],
                    "config": f"compile={compiled[1]}" if compiled and compiled[1] != "none" else EAGER}
            continue
        m = re.match(r"\s+k=(\d+): ([\d.]+) img/s", line)
        if m and head:
            rows.append({"gpu": gpu, **head, "k": int(m[1]), "aggregate_img_per_s": float(m[2]),
                         "cold": int(not rows), "source": source})
    return rows


def build_packing(gpu: str) -> list[dict]:
    out = []
    for path, call in PACKING_SOURCES[gpu]:
        out += parse_packing((REFERENCE / path).read_text(), gpu, f"{path} ({call})")
    return out


def table_text(rows: list[dict], columns: tuple = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_tables() -> list[Path]:
    paths = []
    for gpu in SOURCES:
        path = REFERENCE / gpu / TABLE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_text(build_table(gpu)))
        paths.append(path)
    for gpu in PACKING_SOURCES:
        path = REFERENCE / gpu / PACKING_TABLE
        path.write_text(table_text(build_packing(gpu), PACKING_COLUMNS))
        paths.append(path)
    return paths


if __name__ == "__main__":  # rewrite the committed tables from the bench outputs
    for path in write_tables():
        print(path.relative_to(REPO), file=sys.stderr)
