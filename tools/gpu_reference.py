"""The Python steps of tools/gpu_reference.sh (the converged Fashion-MNIST reference on one GPU).

    python tools/gpu_reference.py packing --grid G --ks "1 2 4 8" --seconds 20 --method icp-adam --out T.tsv
        aggregate training images/s of k runs at once on this machine's device, for each k: the table in T.tsv
        and T.txt (and stderr), the chosen k on stdout
    python tools/gpu_reference.py grid --grid G --results DIR --out DIR/grid.yaml
        the grid G with its results_dir / figures_dir moved to DIR and DIR/figures (same runs, same run ids)
    python tools/gpu_reference.py archive --grid G --results DIR --out A.tar.gz --name NAME
        one tar.gz: NAME/ holding DIR's files and NAME/runs/<run id>/record.json for every run with a record

**Packing.** For each k, k processes each build the training step of the grid's first clean run of ``--method``
(its recipe and overrides: the model, batch, data and method of a real run; ``icp.bench``'s timed
``Trainer.train_step``), take ``--warmup`` steps, meet at a barrier, then train for ``--seconds`` and report
images and seconds; the aggregate is the sum of their images/s (their timed windows overlap but for one chunk of
steps). Each process gets ``cpus // k`` CPU threads, as a sweep of k runs at once gives each job. The chosen k:
start from the smallest k (1) and take a larger k only when its aggregate beats the current choice's by more
than ``--gain`` (10 %), so packing that does not pay stays at one run at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def choose_k(aggregate: dict[int, float], gain: float = 0.10) -> int:
    """The k to run with: a larger k only when its aggregate images/s beats the current choice's by > gain."""
    ks = sorted(aggregate)
    pick = ks[0]
    for k in ks[1:]:
        if aggregate[k] > (1 + gain) * aggregate[pick]:
            pick = k
    return pick


def bench_run(grid_path: str, method: str):
    """The grid run whose training step is timed: the first clean run of ``method`` without options."""
    from icp import grid

    g = grid.load_expand(grid_path, check_recipes=False)
    for run in g.runs.values():
        if run.method == method and not run.options and not run.factors and run.scenario == "clean":
            return run
    raise SystemExit(f"gpu_reference: error: {grid_path} has no clean '{method}' run to time (--method)")


def child(args) -> int:
    """One of k timed processes: set up, warm up, wait at the barrier, train for --seconds, print JSON."""
    import torch

    from icp import bench, config

    setup_start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    run = bench_run(args.grid, args.method)
    sets = [*run.overrides, "train.progress=false", *(args.set or [])]
    cfg = config.load(run.recipe, sets)
    if cfg.data.train_subset is None or cfg.data.train_subset > 8192:  # set-up time only: steps do not depend on it
        cfg = config.load(run.recipe, [*sets, "data.train_subset=8192"])
    timed = bench._Timed(cfg, None)
    _, one = timed.steps(1)
    timed.steps(max(0, args.warmup - 1))
    setup_s = time.perf_counter() - setup_start  # imports aside: data, model, warm-up (and compilation)
    barrier = Path(args.barrier)
    (barrier / f"ready-{args.index}").touch()
    deadline = time.monotonic() + args.barrier_timeout
    while len(list(barrier.glob("ready-*"))) < args.k:
        if time.monotonic() > deadline:
            print(json.dumps({"index": args.index, "error": "the other processes were not ready in time"}))
            return 1
        time.sleep(0.05)
    # chunks of about 0.2 s between clock reads (a device sync each): the device stays busy as in training
    _, t = timed.steps(1)
    chunk = max(1, min(100, int(0.2 / max(t, 1e-4))))
    images, seconds = 0, 0.0
    while seconds < args.seconds:
        n, s = timed.steps(chunk)
        images, seconds = images + n, seconds + s
    print(json.dumps({"index": args.index, "images": images, "seconds": round(seconds, 3),
                      "img_per_s": images / seconds, "device": str(timed.trainer.device),
                      "setup_s": round(setup_s, 1)}))
    return 0


def measure(grid_path: str, k: int, seconds: float, method: str, warmup: int, cpus: int, timeout: float,
            sets: tuple[str, ...] = ()) -> dict:
    """k timed processes at once: their per-process results and the aggregate images/s."""
    with tempfile.TemporaryDirectory(prefix="icp-packing-") as barrier:
        cmd = [sys.executable, __file__, "child", "--grid", grid_path, "--method", method, "--seconds", str(seconds),
               "--warmup", str(warmup), "--threads", str(max(1, cpus // k)), "--k", str(k), "--barrier", barrier,
               *[f"--set={item}" for item in sets]]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpus // k))}
        procs = [subprocess.Popen([*cmd, "--index", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for i in range(k)]
        results, errors = [], []
        for p in procs:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                errors.append(f"timed out after {timeout:.0f} s")
                continue
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            result = json.loads(lines[-1]) if lines else {}
            if p.returncode != 0 or "img_per_s" not in result:
                tail = (result.get("error") or (err.strip().splitlines() or ["no output"])[-1])
                errors.append(f"exit {p.returncode}: {tail}")
            else:
                results.append(result)
    ok = not errors and len(results) == k
    return {"k": k, "aggregate_img_per_s": sum(r["img_per_s"] for r in results) if ok else 0.0,
            "per_run_img_per_s": [round(r["img_per_s"], 1) for r in results],
            "setup_s": max((r.get("setup_s", 0.0) for r in results), default=0.0),
            "device": results[0]["device"] if results else "", "error": "; ".join(errors)}


def packing(args) -> int:
    ks = sorted({int(k) for k in args.ks.split()})
    if not ks or ks[0] < 1:
        raise SystemExit("gpu_reference: error: --ks needs positive integers, e.g. '1 2 4 8'")
    run = bench_run(args.grid, args.method)
    print(f"packing: {args.method} steps of {run.run_id} ({run.recipe}) {' '.join(args.set or [])}, "
          f"{args.seconds:g} s per k, "
          f"{args.cpus} CPU threads shared", file=sys.stderr, flush=True)
    rows = []
    for k in ks:
        row = measure(args.grid, k, args.seconds, args.method, args.warmup, args.cpus, args.timeout, args.set or ())
        rows.append(row)
        print(f"  k={k}: {row['aggregate_img_per_s']:.1f} img/s" + (f" ({row['error']})" if row["error"] else ""),
              file=sys.stderr, flush=True)
    measured = {r["k"]: r["aggregate_img_per_s"] for r in rows if r["aggregate_img_per_s"] > 0}
    if not measured:
        raise SystemExit("gpu_reference: error: no k could be measured: " + "; ".join(r["error"] for r in rows))
    pick = choose_k(measured, args.gain)
    base = measured.get(min(measured))
    lines = ["k\truns_at_once\taggregate_img_per_s\tspeedup\tper_run_img_per_s\tsetup_s\tdevice\tchosen\terror"]
    for r in rows:
        agg = r["aggregate_img_per_s"]
        lines.append(f"{r['k']}\t{r['k']}\t{agg:.1f}\t{agg / base:.2f}\t"
                     f"{','.join(map(str, r['per_run_img_per_s']))}\t{r.get('setup_s', '')}\t{r['device']}\t{'yes' if r['k'] == pick else ''}"
                     f"\t{r['error']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    text = [f"packing: {args.method} training steps of {run.run_id} {' '.join(args.set or [])}, {args.seconds:g} s "
            f"per k (set-up: data, model, warm-up steps and any compilation, before the timed window), {args.cpus} CPU "
            f"threads shared, device {rows[0]['device'] or '?'}",
            f"{'k':>3} {'aggregate img/s':>16} {'speed-up':>9}  per run"]
    for r in rows:
        mark = "  <- chosen" if r["k"] == pick else ""
        text.append(f"{r['k']:>3} {r['aggregate_img_per_s']:>16.1f} {r['aggregate_img_per_s'] / base:>8.2f}x  "
                    f"{', '.join(map(str, r['per_run_img_per_s'])) or r['error']}  (set-up {r.get('setup_s', 0):.1f} s)"
                    f"{mark}")
    text.append(f"chosen: k = {pick} (a larger k only for > {args.gain:.0%} more images/s than the current choice)")
    Path(args.out).with_suffix(".txt").write_text("\n".join(text) + "\n")
    print("\n".join(text), file=sys.stderr)
    print(pick)
    return 0


def derived_grid(args) -> int:
    """The grid with its aggregation outputs moved; checked to hold the same runs with the same ids. With
    ``--studies`` only those studies; with ``--set`` more settings for every run (fewer epochs, say: then the runs
    are not the original grid's, so ``--runs-dir`` must give them a folder of their own)."""
    import yaml

    from icp import grid

    raw = yaml.safe_load(Path(args.grid).read_text())
    raw["results_dir"] = args.results
    raw["figures_dir"] = args.figures or f"{args.results}/figures"
    if args.set and not args.runs_dir:
        raise SystemExit("gpu_reference: error: --set changes the runs: give them a --runs-dir of their own")
    if args.runs_dir:
        raw["runs_dir"] = args.runs_dir
    if args.data_root:
        raw["data_root"] = args.data_root
    if args.set:
        raw["set"] = [*(raw.get("set") or []), *args.set]
    if args.studies:
        unknown = sorted(set(args.studies) - set(raw["studies"]))
        if unknown:
            raise SystemExit(f"gpu_reference: error: {args.grid} has no studies {', '.join(unknown)}")
        raw["studies"] = {k: v for k, v in raw["studies"].items() if k in args.studies}
    raw = {k: v for k, v in raw.items() if not k.startswith("x-")}  # anchors are expanded by the dump
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    said = " ".join(f"--{k.replace('_', '-')} {v if isinstance(v, str) else ' '.join(v)}" for k, v in
                    (("studies", args.studies), ("set", args.set), ("runs_dir", args.runs_dir)) if v)
    out.write_text(f"# {args.grid} with results_dir and figures_dir set by tools/gpu_reference.py grid {said}\n"
                   + yaml.safe_dump(raw, sort_keys=False))
    a, b = grid.load_expand(args.grid), grid.load_expand(out)
    keep = set(b.runs) if args.studies else set(a.runs)
    if args.set:  # the same run ids (the settings differ by design)
        same = sorted(keep & set(a.runs)) == sorted(b.runs)
    else:
        same = ([(r.run_id, r.overrides) for r in a.runs.values() if r.run_id in keep]
                == [(r.run_id, r.overrides) for r in b.runs.values()])
    if not same:
        raise SystemExit(f"gpu_reference: error: {out} does not hold the runs of {args.grid}")
    print(out)
    return 0


def sweep(args) -> int:
    """Train the grid's runs without a complete record, ``--jobs`` at once on this machine, each its own ``icp train``
    process (the Snakefile's train rule, without Snakemake: the GPU machine may lack it), in priority order: the
    variants named by ``--first`` (all their seeds) before the others, a run only once the runs it depends on are
    complete, the longest of the runnable first within a priority. No run starts after ``--deadline`` (epoch
    seconds) less ``--margin``; at the deadline the runs still training are stopped (SIGTERM: each records
    ``interrupted``, resumable from its last.pt) and named. A table of every run (status, wall seconds) is written
    to ``--out``."""
    import signal

    from icp import grid, jsonfile

    g = grid.load_expand(args.grid, check_recipes=False)
    rank = set(args.first or [])

    def status(run) -> str:
        rec = jsonfile.read(run.record) if Path(run.record).is_file() else None
        return (rec or {}).get("status", "missing")

    def size(run) -> float:  # epochs x the compute factor of a FLOP-matched run: longest first
        epochs = next((float(o.split("=", 1)[1]) for o in reversed(run.overrides) if o.startswith("train.epochs=")), 1.0)
        return epochs * (4.0 if run.method == "mixskd" else 1.0)

    todo = [r for r in g.runs.values() if status(r) not in ("complete", "diverged")]
    order = {v: i for i, v in enumerate(dict.fromkeys(r.variant for r in g.runs.values()))}
    # the --first variants as one group, longest first; then the others, shortest first (in grid order), seeds together
    todo.sort(key=lambda r: (0, -size(r), r.seed, 0) if r.variant in rank else (1, size(r), order[r.variant], r.seed))
    env = {**os.environ, "ICP_DEVICE_SHARED_BY": str(args.jobs), "OMP_NUM_THREADS": str(max(1, args.cpus // args.jobs)),
           "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    running: dict = {}  # run id -> (Popen, start, log file)
    table: dict = {}
    print(f"sweep: {len(todo)} of {len(g.runs)} runs to train, {args.jobs} at once, deadline in "
          f"{args.deadline - time.time():.0f} s", file=sys.stderr, flush=True)
    while todo or running:
        for rid, (p, t0, log) in list(running.items()):
            if p.poll() is not None:
                log.close()
                table[rid] = (status(g[rid]), round(time.time() - t0, 1), p.returncode)
                print(f"  {table[rid][0]:11s} {rid} ({table[rid][1]:.0f} s)", file=sys.stderr, flush=True)
                del running[rid]
        now = time.time()
        if now >= args.deadline - args.margin:
            break
        for run in list(todo):
            if len(running) >= args.jobs:
                break
            if any(status(g[d]) != "complete" for d in run.depends):
                if any(d not in running and d not in {r.run_id for r in todo} and status(g[d]) != "complete"
                       for d in run.depends):  # its dependency failed: it cannot run
                    todo.remove(run)
                    table[run.run_id] = ("blocked", 0.0, None)
                continue
            todo.remove(run)
            Path(run.run_dir).mkdir(parents=True, exist_ok=True)
            log = open(Path(run.run_dir) / "train.log", "a")
            cmd = [sys.executable, "-m", "icp", "train", *run.train_args(), "--set", "train.progress=false"]
            running[run.run_id] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO),
                                   time.time(), log)
        time.sleep(0.5)
    for rid, (p, t0, log) in running.items():  # the deadline: stop what still trains
        p.send_signal(signal.SIGTERM)
    for rid, (p, t0, log) in running.items():
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        table[rid] = (status(g[rid]) + " (deadline)", round(time.time() - t0, 1), p.returncode)
    for run in todo:
        table[run.run_id] = ("not started (deadline)", 0.0, None)
    lines = ["run_id\tstatus\twall_s\texit"] + [f"{rid}\t{s}\t{w}\t{'' if rc is None else rc}"
                                               for rid, (s, w, rc) in table.items()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    done = sum(1 for s, _, _ in table.values() if s == "complete")
    print(f"sweep: {done} of {len(table)} runs complete -> {args.out}", file=sys.stderr, flush=True)
    return 0


def pair(args) -> int:
    """A packed pair: two runs launched as a Snakemake sweep launches them (``icp.launch``, submitit's local
    executor, ``--runs-per-gpu 2``), which must form one pack (one job id) and both complete. Writes a few lines to
    ``--out``; exit 0 only if both runs are complete in the same job."""
    from icp import jsonfile

    work = Path(args.work).resolve()
    procs, dirs = [], []
    start = time.time()
    for seed in (0, 1):
        run_dir = work / f"pair-s{seed}"
        dirs.append(run_dir)
        train = ["--config", args.recipe, "--set", f"data.root={args.data_root}", "--set", f"train.seed={seed}",
                 "--set", f"train.epochs={args.epochs}", "--set", f"data.train_subset={args.subset}",
                 "--set", "data.test_subset=1000", "--set", "train.progress=false", *sum((["--set", s] for s in args.set), []),
                 "--out", str(run_dir), "--run-id", f"pair/s{seed}"]
        cmd = [sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", str(args.timeout_min),
               "--gpus", str(args.gpus), "--cpus", str(args.cpus), "--runs-per-gpu", "2", "--pack-dir",
               str(work / ".packs"), "--pack-wait-s", "60", "--poll-s", "0.5", "--", *train]
        run_dir.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(cmd, stdout=open(run_dir.parent / f"launch-s{seed}.log", "w"),
                                      stderr=subprocess.STDOUT, cwd=REPO,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                          filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}))
    rcs = []
    for p in procs:
        try:
            rcs.append(p.wait(timeout=args.timeout_min * 60 + 60))
        except subprocess.TimeoutExpired:
            p.kill()
            rcs.append("timeout")
    wall = time.time() - start
    recs = [jsonfile.read(d / "record.json") or {} for d in dirs]
    jobs = [[j.get("job_id") for j in r.get("jobs") or []] for r in recs]
    ok = (all(rc == 0 for rc in rcs) and all(r.get("status") == "complete" for r in recs)
          and jobs[0] == jobs[1] and len(jobs[0]) == 1)
    lines = [f"packed pair (runs_per_gpu 2, submitit local executor): {'pass' if ok else 'FAIL'} in {wall:.1f} s",
             *[f"  {d.name}: launcher exit {rc}, status {r.get('status', 'no record')}, "
               f"top-1 {((r.get('epochs') or [{}])[-1].get('test') or {}).get('top1', '-')}, "
               f"images/s {((r.get('epochs') or [{}])[-1]).get('images_per_s', '-')}, "
               f"job ids {j}, device {(r.get('env') or {}).get('device_name', '-')}"
               for d, rc, r, j in zip(dirs, rcs, recs, jobs)]]
    if not ok:
        for seed in (0, 1):
            log = work / f"launch-s{seed}.log"
            lines += [f"--- {log.name} (last lines)", *log.read_text(errors="replace").splitlines()[-15:]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return 0 if ok else 1


def archive(args) -> int:
    """One tar.gz of the results folder and the record of every run of the grid that has one."""
    from icp import grid

    g = grid.load_expand(args.grid, check_recipes=False)
    results, out = Path(args.results), Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(p for p in results.rglob("*") if p.is_file() and p.resolve() != out
                           and p.suffix != ".pt" and "submitit" not in p.parts):  # records, not checkpoints
            tar.add(path, f"{args.name}/{path.relative_to(results)}")
        for run in g.runs.values():
            if Path(run.record).is_file():
                tar.add(run.record, f"{args.name}/runs/{run.run_id}/record.json")
                n += 1
    print(f"{out}: {n} of {len(g.runs)} run records, the results of {results}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu_reference.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("packing", help="aggregate images/s of k runs at once, for each k; print the chosen k")
    pk.add_argument("--grid", required=True)
    pk.add_argument("--ks", default="1 2 4 8")
    pk.add_argument("--seconds", type=float, default=20.0, help="timed seconds per k")
    pk.add_argument("--method", default="icp-adam", help="the method whose training step is timed")
    pk.add_argument("--warmup", type=int, default=10, help="steps before the barrier (CUDA set-up, autotuning)")
    pk.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the k processes")
    pk.add_argument("--gain", type=float, default=0.10, help="least gain over the current choice to take a larger k")
    pk.add_argument("--timeout", type=float, default=600.0, help="seconds a k's processes may take in all")
    pk.add_argument("--set", action="append", default=[], help="a config override of the timed run "
                    "(train.compile=reduce-overhead); repeatable")
    pk.add_argument("--out", required=True, help="the table as TSV")
    pk.set_defaults(func=packing)
    ch = sub.add_parser("child")
    for name in ("--grid", "--method", "--barrier"):
        ch.add_argument(name, required=True)
    ch.add_argument("--seconds", type=float, required=True)
    ch.add_argument("--warmup", type=int, default=10)
    ch.add_argument("--threads", type=int, default=1)
    ch.add_argument("--k", type=int, required=True)
    ch.add_argument("--index", type=int, required=True)
    ch.add_argument("--barrier-timeout", type=float, default=300.0)
    ch.add_argument("--set", action="append", default=[])
    ch.set_defaults(func=child)
    gr = sub.add_parser("grid", help="the grid with results_dir / figures_dir moved")
    gr.add_argument("--grid", required=True)
    gr.add_argument("--results", required=True)
    gr.add_argument("--figures", default=None, help="default: RESULTS/figures")
    gr.add_argument("--studies", nargs="*", default=None, help="keep only these studies")
    gr.add_argument("--set", action="append", default=[], help="one more `set` item for every run; repeatable")
    gr.add_argument("--runs-dir", default=None, help="the runs' folder (required with --set)")
    gr.add_argument("--data-root", default=None, help="where the datasets are (default: the grid's)")
    gr.add_argument("--out", required=True)
    gr.set_defaults(func=derived_grid)
    sw = sub.add_parser("sweep", help="train the grid's runs k at once in priority order, until a deadline")
    sw.add_argument("--grid", required=True)
    sw.add_argument("--jobs", type=int, required=True, help="runs at once")
    sw.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the runs")
    sw.add_argument("--deadline", type=float, required=True, help="epoch seconds: no run trains past it")
    sw.add_argument("--margin", type=float, default=0.0, help="no run starts in the last this many seconds")
    sw.add_argument("--first", nargs="*", default=[], help="variants trained first, in this order, all seeds")
    sw.add_argument("--out", required=True, help="the table of runs (TSV)")
    sw.set_defaults(func=sweep)
    pa = sub.add_parser("pair", help="two runs packed in one job through icp.launch (runs_per_gpu 2)")
    pa.add_argument("--work", required=True, help="a fresh folder for the two runs")
    pa.add_argument("--recipe", default="config/recipes/fmnist-resnet20.yaml")
    pa.add_argument("--data-root", default="data")
    pa.add_argument("--epochs", type=int, default=1)
    pa.add_argument("--subset", type=int, default=4096)
    pa.add_argument("--gpus", type=int, default=0)
    pa.add_argument("--cpus", type=int, default=2)
    pa.add_argument("--timeout-min", type=int, default=5)
    pa.add_argument("--set", action="append", default=[])
    pa.add_argument("--out", required=True)
    pa.set_defaults(func=pair)
    ar = sub.add_parser("archive", help="one tar.gz of the results and the runs' records")
    ar.add_argument("--grid", required=True)
    ar.add_argument("--results", required=True)
    ar.add_argument("--out", required=True)
    ar.add_argument("--name", required=True, help="the archive's top folder")
    ar.set_defaults(func=archive)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
