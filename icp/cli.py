"""Command line: ``icp train | grid | status | summarize | tables | figures | methods | models | data prepare | bench |
drift | report``.

Nothing heavy is imported until a command needs it (``icp --help`` and ``icp grid`` load no torch).

Configuration and data problems end the command with one line, ``icp: error: ...``, exit status 2, and
nothing written.
"""
from __future__ import annotations

import argparse
import inspect
import errno
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from icp.data import DataError
from icp.schema import ConfigError, did_you_mean


# What a signal records: SIGTERM (`kill`, a scheduler's cancel) ends the run as interrupted, like Ctrl-C; SIGUSR2
# is SLURM's warning before a time limit or preemption, as submitit asks for it (`--signal=USR2@N`): the job is
# about to be requeued, and the run resumes from last.pt when it starts again.
STOP_SIGNALS = {signal.SIGTERM: "interrupted", signal.SIGUSR2: "requeued"}


def _stop_on_signals(trainer) -> None:
    def stop(signum, frame):
        for s in STOP_SIGNALS:  # once: a second signal (SLURM's and a parent's) must not interrupt the save
            signal.signal(s, signal.SIG_IGN)
        trainer.stop_status = STOP_SIGNALS[signum]
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for s in STOP_SIGNALS:
        signal.signal(s, stop)


def _headline(test: dict) -> str:
    """The final line's test metric, in % as the epoch lines and the tables show it (``top-1 72.70%``)."""
    from icp.metrics import headline_text

    return headline_text(test)


def _train(args) -> int:
    from icp import config

    cfg = config.load(args.config, args.set)
    if args.print_config:  # the resolved config, as the run's config.yaml would hold it; nothing trained or written
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not args.out:
        raise ConfigError("train: --out RUN_DIR is required (or --print-config to see the config only)")
    from icp import engine

    trainer = engine.Trainer(cfg, args.out, run_id=args.run_id)
    _stop_on_signals(trainer)
    record = trainer.run(max_epochs=args.max_epochs)
    last = record["last"] or {}
    test = last.get("test") or {}
    print(f"{record['run_id']}: {record['status']} after {last.get('epoch', 0)}/{cfg.train.epochs} epochs, "
          f"test {_headline(test)}, {record['images_per_s'] or 0:.0f} img/s -> "
          f"{args.out}/record.json")
    if record["status"] == "diverged":
        print(f"icp: {record['run_id']} diverged: {record['error']}", file=sys.stderr)
        return 1
    return 0


def _grid(args) -> int:
    from icp import grid

    if not args.cost and (args.gpu or args.runs_per_gpu or args.detail):
        raise ConfigError("--gpu, --runs-per-gpu and --detail go with --cost")
    if sum(map(bool, (args.cost, args.paths, args.power))) > 1:
        raise ConfigError("--cost, --paths and --power: give one of them")
    if args.power:
        from icp import power
        from icp.results import frames, power_plan

        g = grid.load_expand(args.grid)
        summary = Path(g.results_dir, "summary.csv")  # the records as the tables read them; else the records
        table = power_plan.plan(g, frames.read_summary(summary) if summary.exists() else frames.runs_frame(g))
        print(power_plan.plan_text(table if args.study is None else table[table.study == args.study],
                                   *power.settings(g.analysis)))
        return 0
    if args.cost:
        from icp import cost

        print(cost.report(args.grid, args.gpu or "h100", args.runs_per_gpu, args.study, args.detail))
        return 0
    from icp.figures import unknown_studies

    g = grid.load_expand(args.grid)
    for line in unknown_studies(g.studies):
        print(line, file=sys.stderr)
    runs = g.select(args.study)
    if args.paths:
        print("\n".join(r.record for r in runs))
        return 0
    for r in runs:
        dep = f"  (after {', '.join(r.depends)})" if r.depends else ""
        print(f"{r.run_id}  [{','.join(r.studies)}]{dep}")
    counts = ", ".join(f"{s} {len(ids)}" for s, ids in g.studies.items() if args.study in (None, s))
    for cell in g.tuned:
        if args.study in (None, cell.study):
            chosen = g.chosen(cell)
            print(f"tuning {cell.name} [{cell.study}]: {len(cell.trials)} trials of {', '.join(cell.settings[0])} at "
                  f"seed {g[cell.trials[0]].seed}; then {len(cell.seeds)} final runs "
                  f"({cell.method}+tuned=<chosen>) at seeds {', '.join(map(str, cell.seeds))}: "
                  + ("no trial chosen yet" if chosen is None else f"trial {chosen} chosen, listed above"),
                  file=sys.stderr)
    print(f"{len(runs)} runs ({counts}; a run shared by studies is counted in each and trained once)",
          file=sys.stderr)
    return 0


def _status(args) -> int:
    from icp import status

    if not args.watch:
        print(status.render(args.grid, args.runs_dir, args.study))
        return 0
    return status.watch(args.grid, args.runs_dir, args.study, args.every, store=not args.no_store)


def _summarize(args) -> int:
    from icp import grid
    from icp.results import frames, summary, tables

    g = grid.load_expand(args.grid, check_recipes=False)
    paths = summary.summarize(g, args.out or g.results_dir, args.runs_dir)
    runs = frames.read_summary(paths["summary"])
    counts = ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items())
    print(f"{len(runs)} runs of {args.grid}: {counts} -> {', '.join(map(str, paths.values()))}")
    for line in tables.not_in_table(runs)[: args.show]:
        print(f"  {line}")
    if not args.no_store:
        from icp import tracker_store

        synced = tracker_store.sync_grid(g, args.out, args.runs_dir)
        if synced is not None:
            print(f"MLflow store {synced.store}: {synced.runs} runs ({synced.created} new, {synced.metrics} values "
                  f"logged); to browse: {tracker_store.ui_command(synced.store)}")
    return 0


def _select(args) -> int:
    """Write the selection record of one tuned cell and method (``--cell dataset/model/scenario/method``) from its
    trials' records (icp.tuning.select): the chosen trial on validation, every trial's metric, the rule."""
    from pathlib import Path

    from icp import grid, jsonfile, tuning

    g = grid.load_expand(args.grid, check_recipes=False)
    cells = {c.name: c for c in g.tuned}
    if args.cell not in cells:
        raise ConfigError(f"{args.grid}: no tuned cell '{args.cell}'" + (
            f"; the grid tunes: {', '.join(cells)}" if cells else "; the grid tunes nothing"))
    cell = cells[args.cell]
    records = [jsonfile.read(g[rid].record) for rid in cell.trials]  # unreadable or absent: the trial lost
    sel = tuning.select(list(zip(cell.trials, cell.settings)), records)
    sel.update(cell=cell.name, study=cell.study, seeds=list(cell.seeds),
               finals=[r.run_id for r in g.finals(cell, sel["chosen"])] if sel["chosen"] is not None else [])
    out = Path(args.out or g.selection(cell))
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonfile.write(sel, out)
    lost = sum(t["lost"] for t in sel["trials"])
    chosen = "none (every trial lost)" if sel["chosen"] is None else (
        f"trial {sel['chosen']} ({', '.join(f'{k}={v}' for k, v in sel['chosen_settings'].items())}, "
        f"validation top-1 {100 * sel['trials'][sel['chosen']]['val_top1']:.2f}%)")
    print(f"{cell.name}: {len(records)} trials, {lost} lost; chosen: {chosen} -> {out}")
    return 0


def _tables(args) -> int:
    from icp import grid
    from icp.results import cells as cells_mod
    from icp.results import frames, tables, verdict

    g = grid.load_expand(args.grid, check_recipes=False)
    runs = frames.read_summary(args.summary or f"{g.results_dir}/summary.csv")
    out = args.out or f"{g.results_dir}/tables"
    studies = [] if args.verdict and not args.study else args.study or list(g.studies)
    cells = cells_mod.cells(runs) if studies else None
    for study in studies:
        if study not in g.studies:
            raise ConfigError(f"unknown study '{study}'{did_you_mean(study, g.studies)}")
        paths = tables.write_tables(study, frames.study_runs(runs, study), cells, out, grid=g)
        print(" ".join(map(str, paths)))
    if args.verdict or (not args.study and verdict.applies(g.studies)):  # every study's tables: the verdict too
        print(" ".join(map(str, verdict.write(runs, out, [s for s in verdict.STUDIES if s in g.studies]))))
    return 0


def _figures(args) -> int:
    from icp import figures, grid
    from icp.results import frames

    g = grid.load_expand(args.grid, check_recipes=False)
    results = args.results or g.results_dir
    runs = frames.read_summary(f"{results}/summary.csv")
    epochs_csv = Path(results) / "epochs.csv"
    epochs = pd_read(epochs_csv)
    for name in args.only or figures.available(g.studies):
        print(" ".join(map(str, figures.make(name, runs, epochs, args.out or g.figures_dir))))
    return 0


def _track(args) -> int:
    """Version a sweep's runs (records, checkpoints, logs) with DVC and push them to the default remote."""
    import subprocess

    from icp import grid

    g = grid.load_expand(args.grid, check_recipes=False)
    if not Path(g.runs_dir).is_dir():
        raise ConfigError(f"{g.runs_dir}: no runs to track (train the grid first)")
    n = sum(1 for _ in Path(g.runs_dir).rglob("record.json"))
    for cmd in (["dvc", "add", g.runs_dir], *([] if args.no_push else [["dvc", "push", f"{g.runs_dir}.dvc"]])):
        if subprocess.run(cmd).returncode != 0:
            raise ConfigError(f"`{' '.join(cmd)}` failed (see its output above)")
    print(f"tracked {g.runs_dir} ({n} run records) in {g.runs_dir}.dvc"
          f"{'' if args.no_push else ' and pushed it'}; now: git add {g.runs_dir}.dvc && git commit")
    return 0


def pd_read(path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # no run has finished an epoch yet
        return pd.DataFrame(columns=["run_id", "epoch"])


def _methods(args) -> int:
    from icp.methods import get, list_methods

    for name in list_methods():
        doc = get(name).__doc__ or sys.modules[get(name).__module__].__doc__ or ""
        print(f"{name:14s} {_first_sentence(doc)}")
    return 0


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence: its first paragraph joined into one line, cut at the first full stop that ends
    the paragraph or comes before a capital (not one of 'Fig.', 'Sec.', 'Eq.', 'al.')."""
    paragraph = " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())
    cut = re.search(r"(?<!Fig)(?<!Sec)(?<!Eq)(?<!al)\.(\s+(?=[A-Z])|$)", paragraph)
    return paragraph[:cut.start() + 1] if cut else paragraph


def _models(args) -> int:
    from icp.models import GENERATIVE, build_model, list_models

    for name in list_models():
        n = sum(p.numel() for p in build_model(name, 10, 3).parameters())
        what = "generative, no classes: trained with its own objective" if name in GENERATIVE else "classifier, 10 classes"
        print(f"{name:18s} {n / 1e6:6.2f}M params ({what})")
    return 0


def _prepare(args) -> int:
    from icp.data import prepare

    print(prepare(args.dataset, args.root, download=args.download))
    return 0


def _bench(args) -> int:
    from icp import bench

    shape = tuple(int(v) for v in args.shape.split("x")) if args.shape else (3, 32, 32)
    table = bench.run(args.models, args.methods, args.device, args.batch_size, args.steps, args.warmup,
                      args.data, shape, args.set, args.profile, args.rounds)
    print(table.to_string(index=False))
    return 0


def _drift(args) -> int:
    from icp import drift

    return drift.main(args.summary, args.against)


def _report(args) -> int:
    from icp.results import report
    from icp.schema import existing_dir

    for path in args.paths:
        if not Path(path).is_file():
            existing_dir(path, "run directory or record.json")
    table = report.summary(args.paths, include_incomplete=args.all)
    print(report.markdown(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


TRAIN_EXAMPLES = """examples:
  # a short Fashion-MNIST run of plain cross-entropy, on the CPU
  icp train --config config/fmnist-ce.yaml --set train.epochs=3 --set train.device=cpu --out runs/ce
  # ICP on the same recipe; started again with the same arguments, it resumes from runs/icp/last.pt
  icp train --config config/fmnist-icp.yaml --set method.options.steps=3 --out runs/icp
  # the config that would run (recipe + every --set), as YAML; nothing trained, nothing written
  icp train --config config/fmnist-icp.yaml --set train.epochs=5 --print-config
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icp", description="The ICP self-distillation benchmark: train one run, read a grid of runs and its "
        "progress, aggregate records into tables and figures. A bad config or a missing dataset ends a command with "
        "one line, exit status 2, nothing written.")
    sub = p.add_subparsers(dest="command", required=True)
    on_grid = argparse.ArgumentParser(add_help=False)  # the commands that read a grid file
    on_grid.add_argument("--grid", default="config/paper.yaml", help="grid file (default config/paper.yaml)")
    t = sub.add_parser("train", help="train one run (resumes from RUN_DIR/last.pt if present)",
                       description="Train one run into RUN_DIR; a RUN_DIR that holds last.pt resumes from it.", epilog=TRAIN_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", help="YAML config file (defaults for every key not given)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.epochs=5 (repeatable; applied in order after --config)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (record.json, last.pt, ...); required unless "
                   "--print-config")
    t.add_argument("--print-config", action="store_true", help="print the resolved config as YAML (--config with "
                   "every --set applied: what RUN_DIR/config.yaml would hold) and exit; trains and writes nothing")
    t.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs in this call")
    t.add_argument("--run-id", default=None, help="the run's id in its record (the grid's id; default: derived)")
    t.set_defaults(func=_train)
    g = sub.add_parser("grid", parents=[on_grid], help="the runs of a grid file (every study, or one)")
    g.add_argument("--study", default=None, help="only this study's runs")
    g.add_argument("--paths", action="store_true", help="print each run's record path (Snakemake targets)")
    g.add_argument("--cost", action="store_true", help="per study: runs, training images and estimated GPU-hours "
                   "(images / the GPU's bench images/s, results/reference/<gpu>/throughput.csv), and the total")
    g.add_argument("--power", action="store_true", help="per study and condition: the primary family's size, the "
                   "seeds, the SD of paired differences (records, else the grid's pilot), the smallest difference "
                   "detectable at 80 %% power after Holm, and the seeds a declared target needs")
    g.add_argument("--gpu", default=None, metavar="NAME", help="with --cost: the bench table (default h100)")
    g.add_argument("--runs-per-gpu", type=int, default=None, metavar="K",
                   help="with --cost: runs packed per GPU (default: runs_per_gpu of profiles/slurm/config.yaml)")
    g.add_argument("--detail", action="store_true", help="with --cost: also the images/s used and their basis")
    g.set_defaults(func=_grid)
    st = sub.add_parser("status", help="progress of a grid's runs: counts per study, and each running run")
    st.add_argument("--grid", default=None, help="grid file (default: the grid file under config/ whose runs have "
                    "records, the most recent where several have; config/paper.yaml where none has)")
    st.add_argument("runs_dir", nargs="?", default=None, help="runs directory (default: the grid's runs_dir)")
    st.add_argument("--study", default=None, help="only this study")
    st.add_argument("--watch", action="store_true", help="refresh until every run is final (in place in a terminal, "
                    "a block per refresh in a log), bringing the grid's MLflow store up to date each time")
    st.add_argument("--every", type=float, default=10.0, metavar="SECONDS", help="with --watch: seconds between "
                    "refreshes (default 10)")
    st.add_argument("--no-store", action="store_true", help="with --watch: leave the MLflow store alone")
    st.set_defaults(func=_status)
    su = sub.add_parser("summarize", parents=[on_grid], help="summary.csv (one row per grid run), epochs.csv, "
                        "metrics.json, dvc/<variant>.json (DVC's metric) and the learning curves")
    su.add_argument("--runs-dir", default=None, help="where the records are (default: the grid's runs_dir)")
    su.add_argument("--out", default=None, help="output directory (default: the grid's results_dir)")
    su.add_argument("--show", type=int, default=20, help="list this many runs that are not complete")
    su.add_argument("--no-store", action="store_true", help="do not bring the grid's MLflow store "
                    "(<results_dir>/mlruns, icp.tracker_store) up to date with the records (also: ICP_TRACKER_STORE=0)")
    su.set_defaults(func=_summarize)
    se = sub.add_parser("select", parents=[on_grid], help="a tuned cell's selection on validation, from its trials' "
                        "records (a Snakemake checkpoint runs it)")
    se.add_argument("--cell", required=True, metavar="DATASET/MODEL/SCENARIO/METHOD", help="the tuned cell and method")
    se.add_argument("--out", default=None, help="selection file (default: <results_dir>/tuning/<cell>/selection.json)")
    se.set_defaults(func=_select)
    ta = sub.add_parser("tables", parents=[on_grid], help="per-study tables (csv, md, tex, html) from summary.csv")
    ta.add_argument("--summary", default=None, help="summary.csv (default: <results_dir>/summary.csv)")
    ta.add_argument("--study", action="append", default=None, help="only this study (repeatable)")
    ta.add_argument("--out", default=None, help="output directory (default: <results_dir>/tables)")
    ta.add_argument("--verdict", action="store_true", help="the verdict per study over its units, dataset × model "
                    "(verdict.csv, verdict.md: IQM difference to ce, probability of improvement, average rank, for "
                    "studies main, noisy, fewshot, tuned); alone, only it; without --study it is made with every "
                    "study's tables")
    ta.set_defaults(func=_tables)
    fi = sub.add_parser("figures", parents=[on_grid], help="the paper's figures (png, pdf) from summary.csv and epochs.csv")
    fi.add_argument("--results", default=None, help="directory of summary.csv and epochs.csv (default: results_dir)")
    fi.add_argument("--only", action="append", default=None, help="only this figure (repeatable)")
    fi.add_argument("--out", default=None, help="output directory (default: the grid's figures_dir)")
    fi.set_defaults(func=_figures)
    tr = sub.add_parser("track", parents=[on_grid], help="after a sweep: dvc add the grid's runs directory and dvc push it")
    tr.add_argument("--no-push", action="store_true", help="only dvc add")
    tr.set_defaults(func=_track)
    sub.add_parser("methods", help="list training methods").set_defaults(func=_methods)
    sub.add_parser("models", help="list models").set_defaults(func=_models)
    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_command", required=True, help="prepare: find or download a dataset")
    dp = dsub.add_parser("prepare", help="put a dataset under ROOT in the layout training reads")
    dp.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "cifar100",
                                                                  "imagefolder", "cub"])
    dp.add_argument("--root", default="data")
    dp.add_argument("--download", action="store_true", help="download if not found (needs internet)")
    dp.set_defaults(func=_prepare)
    b = sub.add_parser("bench", help="training images/s per method and model, and speed relative to the baseline (ce; vae for the VAE)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to time (default auto: cuda when available)")
    b.add_argument("--models", nargs="+", default=["resnet20"], help="the models to time (default resnet20; icp models lists them)")
    b.add_argument("--methods", nargs="+", default=None, help="the methods to time (default: every registered method)")
    b.add_argument("--batch-size", type=int, default=128, help="training images per step (default 128)")
    b.add_argument("--steps", type=int, default=20, help="timed training steps per round (default 20)")
    b.add_argument("--warmup", type=int, default=5, help="untimed steps before the first round: allocator, cuDNN (default 5)")
    b.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per method, the median kept (default 3)")
    b.add_argument("--data", default="fashion-mnist",
                   help="a dataset name, or 'synthetic' for random images of --shape (default fashion-mnist)")
    b.add_argument("--shape", default=None, help="CxHxW for --data synthetic (default 3x32x32)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every row")
    b.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators per row")
    b.set_defaults(func=_bench)
    dr = sub.add_parser("drift", help="after dvc repro: which headline numbers moved against the committed ones, and "
                        "whether each lies within the seeds' spread (drift) or beyond it (breakage?); exit 1 if any is beyond")
    dr.add_argument("--summary", default="results/laptop/summary.csv", help="the summary to judge (default: the laptop's)")
    dr.add_argument("--against", default="HEAD", metavar="REV", help="the git revision holding the committed summary")
    dr.set_defaults(func=_drift)
    r = sub.add_parser("report", help="mean ± std over seeds of the runs under the given directories")
    r.add_argument("paths", nargs="+", help="run directories, folders of them, or record.json files")
    r.add_argument("--all", action="store_true", help="include runs that are not complete")
    r.add_argument("--csv", default=None, help="also write the table as CSV")
    r.set_defaults(func=_report)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "methods", "") is None:
        from icp.methods import list_methods

        args.methods = list_methods()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("icp: interrupted (the run resumes from last.pt when started again)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `icp grid | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if (line := unwritable(exc)) is not None:
            print(f"icp: error: {line}", file=sys.stderr)
            return 2
        if not _user_error(exc):
            raise
        print(f"icp: error: {exc}", file=sys.stderr)
        return 2


# what a read-only, unwritable or full output location raises
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}


def unwritable(exc: BaseException) -> Optional[str]:
    """``cannot write PATH: reason`` for an output that cannot be written (read-only file system, no permission,
    disk full), found anywhere in the exception's chain; None for any other error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            where = exc.filename or "an output file"
            return f"cannot write {where}: {exc.strerror or os.strerror(exc.errno)} (choose a writable --out or fix " \
                   f"the folder's permissions)"
        exc = exc.__cause__ or exc.__context__
    return None


def _user_error(exc: BaseException) -> bool:
    """A config, data or checkpoint problem, told to the user in one line (a CheckpointError can only come from
    icp.checkpoint once it is imported: the CLI does not import torch for commands that do not need it)."""
    kinds = [ConfigError, DataError]
    if "icp.checkpoint" in sys.modules:
        kinds.append(sys.modules["icp.checkpoint"].CheckpointError)
    return isinstance(exc, tuple(kinds))


if __name__ == "__main__":
    sys.exit(main())
