"""Smoke test of every classifier method of the registry on a device: a few real training steps each, eager and
compiled, every (method, mode) in its own process so that one failure (a CUDA error poisons its process) costs
only its own row, and its traceback is kept.

    python tools/gpu_smoke.py --device cuda --steps 20 --modes eager compiled --workers 4 --out DIR

writes ``DIR/smoke.tsv`` (method, mode, status, images/s over the timed steps, set-up seconds (compilation
included), error), ``DIR/smoke.txt`` (the same as a table) and ``DIR/smoke_tracebacks.txt`` (the whole traceback
of every failure). A mode is a set of config overrides: ``eager`` is the recipe as it is (``train.compile=none``;
ICP's own CUDA graph of its refinement loop on, its default), ``compiled`` adds ``train.compile=reduce-overhead``
(the model compiled with CUDA graphs). The ``ce`` rows start first (the compiled one fills the compile cache that
the others then share), then every eager row, then the compiled ones, ``--workers`` at once. Rows that run beside
others are marked ``shared`` in the table: their images/s are a pass/fail witness, not a throughput (``tools/gpu_reference.py packing`` measures that on an
idle device). Each row trains ``icp.bench``'s timed ``Trainer.train_step`` (the engine's own step: forward,
loss, backward, optimizer) on the real data of the recipe.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"eager": [], "compiled": ["train.compile=reduce-overhead"]}
RECIPE = "config/recipes/fmnist-resnet20.yaml"


def classifier_methods() -> list[str]:
    """Every registered method that trains a classifier (``icp`` is the generic form its presets name)."""
    from icp.methods import get, list_methods

    return [m for m in list_methods() if m != "icp" and "classifier" in get(m).supports]


def _has_teacher(method: str) -> bool:
    import dataclasses

    from icp.methods import get

    return "teacher" in {f.name for f in dataclasses.fields(get(method).Options)}


def one(args) -> int:
    """One (method, mode) row: set up, warm up, time ``--steps`` steps; one JSON line on stdout."""
    row = {"method": args.method, "mode": args.mode}
    start = time.perf_counter()
    try:
        import torch

        from icp import bench, config

        torch.set_num_threads(max(1, args.threads))
        base = [f"train.device={args.device}", "train.progress=false", "train.epochs=1",
                f"data.root={args.data_root}", "data.train_subset=8192", "data.test_subset=1000"]
        sets = [*base, f"method.name={args.method}", *MODES[args.mode]]
        with tempfile.TemporaryDirectory(prefix="icp-smoke-") as tmp:
            extra = []
            if _has_teacher(args.method):  # AI-KD: a ce model as best.pt
                ce = bench._Timed(config.load(args.recipe, [*base, "method.name=ce"]), None)
                extra = bench.teacher_overrides(args.method, [], ce, Path(tmp))
                del ce
            timed = bench._Timed(config.load(args.recipe, [*sets, *extra]), None)
            timed.steps(args.warmup)
            row["setup_s"] = round(time.perf_counter() - start, 1)
            images, seconds = timed.steps(args.steps)
        row.update(status="pass", img_per_s=round(images / seconds, 1), device=str(timed.trainer.device))
        if timed.trainer.device.type == "cuda":
            row["max_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    except BaseException as exc:  # noqa: BLE001 - every failure is a row
        row.update(status="FAIL", error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                   traceback=traceback.format_exc())
    print(json.dumps(row), flush=True)
    return 0


def run_row(method: str, mode: str, args, shared: bool) -> dict:
    cmd = [sys.executable, __file__, "one", "--method", method, "--mode", mode, "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--recipe", args.recipe, "--data-root", args.data_root]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    timeout = max(5.0, min(args.timeout, args.end - time.monotonic()))  # never past the smoke's budget
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {
            "method": method, "mode": mode, "status": "FAIL",
            "error": f"exit {p.returncode}: " + ((p.stderr.strip().splitlines() or ["no output"])[-1]),
            "traceback": p.stderr[-20000:]}
    except subprocess.TimeoutExpired as exc:
        row = {"method": method, "mode": mode, "status": "TIMEOUT", "error": f"not done in {timeout:.0f} s",
               "traceback": (exc.stderr or b"")[-20000:].decode(errors="replace") if isinstance(exc.stderr, bytes)
               else str(exc.stderr or "")}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["shared"] = shared
    mark = row.get("img_per_s", "")
    print(f"  smoke {mode:8s} {method:13s} {row['status']:7s} {mark} {row.get('error', '')}", file=sys.stderr,
          flush=True)
    return row


def smoke(args) -> int:
    methods = args.methods or classifier_methods()
    methods = ["ce", *[m for m in methods if m != "ce"]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.end = time.monotonic() + args.budget  # every row ends by then (a row still running is a TIMEOUT)
    deadline = args.end - min(20.0, args.budget / 4)  # no row starts after this
    # ce first in each mode (its compiled row fills the compile cache), then every eager row, then the compiled ones
    queue = [("ce", mode) for mode in reversed(args.modes)] + [(m, mode) for mode in args.modes for m in methods[1:]]
    with cf.ThreadPoolExecutor(args.workers) as pool:
        futures = {}
        for m, mode in queue:
            futures[pool.submit(lambda m=m, mode=mode: run_row(m, mode, args, shared=args.workers > 1)
                                if time.monotonic() < deadline else
                                {"method": m, "mode": mode, "status": "SKIPPED", "error": "smoke budget spent",
                                 "shared": False})] = (m, mode)
        done = {futures[f]: f.result() for f in cf.as_completed(futures)}
    rows = [done[(m, mode)] for mode in args.modes for m in methods]
    write(rows, out)
    return 0 if all(r["status"] == "pass" for r in rows) else 1


def write(rows: list[dict], out: Path) -> None:
    cols = ["method", "mode", "status", "img_per_s", "setup_s", "wall_s", "max_memory_mb", "shared", "device", "error"]
    lines = ["\t".join(cols)] + ["\t".join(str(r.get(c, "")) for c in cols) for r in rows]
    (out / "smoke.tsv").write_text("\n".join(lines) + "\n")
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    by = {(r["method"], r["mode"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = f"{'method':14s}" + "".join(f" {m + ' status':>16s} {m + ' img/s':>16s} {m + ' set-up s':>16s}" for m in modes)
    text = [head]
    for m in methods:
        cells = ""
        for mode in modes:
            r = by.get((m, mode), {})
            img = f"{r['img_per_s']:.0f}{'*' if r.get('shared') else ''}" if "img_per_s" in r else "-"
            cells += f" {r.get('status', '-'):>16s} {img:>16s} {r.get('setup_s', '-')!s:>16s}"
        text.append(f"{m:14s}{cells}")
    n_pass = sum(r["status"] == "pass" for r in rows)
    text.append(f"{n_pass} of {len(rows)} rows pass; * measured beside other smoke rows (a witness, not a "
                f"throughput); set-up includes data, model, warm-up steps and compilation")
    for r in rows:
        if r["status"] != "pass":
            text.append(f"{r['method']} {r['mode']}: {r['status']}: {r.get('error', '')}")
    (out / "smoke.txt").write_text("\n".join(text) + "\n")
    (out / "smoke_tracebacks.txt").write_text("\n\n".join(
        f"== {r['method']} {r['mode']}: {r['status']}\n{r.get('traceback', '')}" for r in rows
        if r["status"] != "pass") + "\n")
    print("\n".join(text), file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu_smoke.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cuda")
    common.add_argument("--steps", type=int, default=20, help="timed steps per row")
    common.add_argument("--warmup", type=int, default=5, help="steps before timing (compilation happens here)")
    common.add_argument("--threads", type=int, default=2, help="CPU threads per row's process")
    common.add_argument("--recipe", default=RECIPE)
    common.add_argument("--data-root", default="data")
    sm = sub.add_parser("smoke", parents=[common], help="every method in every mode; the table")
    sm.add_argument("--methods", nargs="*", default=None, help="default: every classifier method of the registry")
    sm.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    sm.add_argument("--workers", type=int, default=4, help="rows at once after each mode's first ce row")
    sm.add_argument("--timeout", type=float, default=240.0, help="seconds one row may take")
    sm.add_argument("--budget", type=float, default=600.0, help="seconds for the whole smoke: rows still running "
                    "then are TIMEOUT rows, and the table is written")
    sm.add_argument("--out", required=True)
    sm.set_defaults(func=smoke)
    on = sub.add_parser("one", parents=[common])
    on.add_argument("--method", required=True)
    on.add_argument("--mode", required=True, choices=list(MODES))
    on.set_defaults(func=one)
    args = p.parse_args(argv)
    if args.command is None:
        p.error("a command is needed: smoke or one")
    return args.func(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
