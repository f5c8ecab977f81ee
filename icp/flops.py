"""``python -m icp.flops``: every method's training FLOPs per step, counted, against what it declares.

Every method declares what one training step costs in ``ce`` steps of the same model and batch
(:meth:`icp.methods.options.Cost.step_cost`, counting a forward pass as 1/3 and a backward as 2/3). This tool
counts it: for each model the paper grid trains (``config/paper.yaml``: its ``recipes`` and the blocks' own
recipes; :func:`grid_models`), at the size and class count of the first dataset the grid trains it on, it builds
the engine's :class:`~icp.engine.Trainer` from the model's recipe on the CPU with random images (``icp bench``'s
synthetic splits) and runs the engine's own ``Trainer.train_step`` (``forward_train``, backward, gradient
clipping, optimizer and scheduler step, ``after_step``) under torch's FLOP counter
(:class:`torch.utils.flop_counter.FlopCounterMode`), for

* every registered method that trains the model's kind at its default options, and the variants the grid trains
  whose declared cost differs (:data:`VARIANTS`: ICP's alpha-only control ``steps: 0``; the authors' eval-mode CE);
* at the **last epoch** of a 4-epoch run, after :data:`SETTLE` steps of that epoch: past ICP's warm-up (ICP's
  refinement starts after ``floor(warmup · E)`` epochs; the counted step is a refining one), past DLB's first step
  (which has no last batch), with PS-KD's memory and AI-KD's discriminator in use; ``on_epoch_start`` runs first,
  as in the engine. AI-KD's teacher is the ``ce`` model of the same process saved as a checkpoint (the network the
  real teacher is; FLOPs do not depend on weights);

and divides each by the baseline's (``ce``; ``vae`` for the VAE) step on the same model and batch. FLOPs scale
with the batch, so the ratio does not depend on it (a small batch keeps the count a few minutes on 2 CPU cores).
What the counter counts: matrix multiplications and convolutions, forward and backward, wherever they run
(heads, discriminators, teachers, ICP's input gradients); it has no rule for element-wise ops, norms, the loss or
the optimizer's update, which are not counted. Its per-module tracking is left out (:class:`_GlobalOnly`: it
breaks ``torch.autograd.grad``). One torch thread by default (``--threads``): 4 minutes on 2 shared CPU cores.

It writes :data:`icp.methods.options.FLOPS_TABLE` (``results/reference/flops.csv``: method, model, counted and
declared ratio, data, batch, torch version) and prints it. The table is read torch-free by
:func:`icp.methods.options.epoch_costs`: the cost of a run of a method on a model the table counts is the counted
ratio wherever it differs from the declaration by more than :data:`icp.methods.options.CONFIRMED` (the grid's
compute-matched control, ``icp grid --cost``, the compute figure); ``tests/test_flops.py`` fails where a
declaration and the count differ by more than 5 % unless it names the pair with the reason (``KNOWN``: a cost
that depends on the model, which ``step_cost`` cannot see: MixSKD's stage count, BYOT's heads), and where the
table's declared column is not what a method declares today. Rerun it after changing or adding a method's step
and commit the table (counts are exact, so an unchanged method's rows are the same).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from icp import bench, config, data
from icp.engine import Trainer
from icp.methods import get as get_method
from icp.methods import list_methods
from icp.methods.options import FLOPS_COLUMNS, FLOPS_TABLE, epoch_costs
from icp.results.frames import BASELINE, kind_of
from icp.schema import read_yaml

REPO = Path(__file__).resolve().parent.parent
GRID = REPO / "config" / "paper.yaml"
EPOCHS = 4  # the counted step is one of the last epoch: past any warm-up fraction < 1
SETTLE = 1  # steps of the last epoch run before the counted one (DLB's first step has no last batch)
BATCH = 8
# Variants the grids train whose declared cost differs from the method's default (model -> method specs,
# ``NAME:key=value,...`` as icp bench's): ICP's alpha-only control (every classifier model), the authors' study's
# eval-mode CE (resnet50_cifar).
VARIANTS = {"*classifier": ["icp:steps=0"],
            "resnet50_cifar": ["icp:steps=0,authors_eval_ce=true", "icp-adam:authors_eval_ce=true"]}


def grid_models(grid_file: Path = GRID) -> dict[str, tuple[str, str]]:
    """model -> (dataset, recipe file) of the grid: the first dataset of each model in its ``recipes``, then the
    models of blocks with a recipe of their own (the authors' resnet50_cifar)."""
    import yaml

    tree = yaml.safe_load(Path(grid_file).read_text())
    out: dict[str, tuple[str, str]] = {}
    for cell, recipe in tree.get("recipes", {}).items():
        dataset, model = cell.split("/")
        out.setdefault(model, (dataset, recipe))
    for blocks in (tree.get("studies") or {}).values():
        for block in blocks if isinstance(blocks, list) else [blocks]:
            recipe = (block.get("recipe") or {}).get("file")
            if recipe:
                for model in block.get("models", []):
                    for dataset in block.get("datasets", []):
                        out.setdefault(model, (dataset, recipe))
    return out


def shape_of(dataset: str, recipe_tree: dict) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a dataset as training sees it."""
    from icp.cost import CLASSES

    size = data.input_size(dataset, (recipe_tree.get("data") or {}).get("image_size"))
    info = data.INFO.get(dataset)
    channels = info.in_channels if info else 3
    return (channels, size, size), CLASSES.get(dataset) or info.num_classes


class _GlobalOnly:
    """The counter's module tracker, without its hooks: ``FlopCounterMode`` attributes FLOPs to modules through
    ``ModuleTracker``, whose backward hooks fail inside ``torch.autograd.grad`` ("A leaf node was passed to
    _will_engine_execute_node", torch 2.14; ICP's refinement takes input gradients). The totals, all we read,
    are the counter's own (its dispatch mode and FLOP formulas), under the one parent ``Global``."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, totals only (:class:`_GlobalOnly`)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


class Counted:
    """A set-up trainer of one method at the last epoch, whose steps can be counted (an ``icp bench`` row's)."""

    def __init__(self, cfg: config.Config, splits: data.Splits):
        self.cfg = cfg
        self.trainer = Trainer(cfg, run_dir="/nonexistent-flops-run")
        self.trainer.setup(splits)
        self.trainer.method.train()
        self.epoch = cfg.train.epochs - 1
        self.trainer.method.on_epoch_start(self.epoch)
        self.gen = torch.Generator().manual_seed(0)
        self.sums: dict = {}
        self.correct = torch.zeros((), dtype=torch.long)
        self.batches = iter(self.trainer.train_loader.epoch(self.trainer.index_batches(self.gen), self.gen))

    def step_flops(self, settle: int = SETTLE) -> int:
        for _ in range(settle):
            self.trainer.train_step(next(self.batches), self.epoch, self.sums, self.correct)
        counter = flop_counter()
        with counter:
            self.trainer.train_step(next(self.batches), self.epoch, self.sums, self.correct)
        return counter.get_total_flops()


def count(model: str, methods: Sequence[str], recipe: str, shape: tuple[int, int, int], classes: int,
          batch: int = BATCH, overrides: Sequence[str] = (), log=None) -> list[dict]:
    """Rows of the table for one model: each method spec's counted step FLOPs over the baseline's."""
    baseline = BASELINE[kind_of(model)][0]
    tree = read_yaml(REPO / recipe if not Path(recipe).is_absolute() else recipe, "recipe")
    splits = bench.synthetic_splits(shape, batch * (SETTLE + 2) * 2, classes)
    c, h, w = shape
    sets = [f"model.name={model}", "train.device=cpu", f"train.batch_size={batch}", f"train.epochs={EPOCHS}",
            "train.progress=false", "train.compile=none", "train.bf16=false", "train.channels_last=false",
            "data.num_workers=0", "data.val_fraction=0", "data.dataset=imagefolder", f"data.image_size={h}",
            *overrides]
    rows, base, flops = [], None, {}
    with tempfile.TemporaryDirectory(prefix="icp-flops-") as tmp:
        for spec in [baseline, *(m for m in methods if m != baseline)]:
            name, variant = bench.parse_variant(spec)
            if kind_of(model) not in get_method(name).supports:
                continue
            extra = bench.teacher_overrides(name, overrides, base, Path(tmp)) if base is not None else []
            cfg = config.resolve(tree, [*sets, *variant, *extra])
            torch.manual_seed(0)
            counted = Counted(cfg, splits)
            flops[spec] = counted.step_flops()
            if base is None:
                base = counted
            options = {k: v for k, v in cfg.method.options.items() if k != "teacher"}
            declared = epoch_costs(name, options, EPOCHS)[-1]
            rows.append({"method": spec, "model": model, "counted": round(flops[spec] / flops[baseline], 4),
                         "declared": round(declared, 4), "data": f"{c}x{h}x{w}/{classes}", "batch": batch,
                         "torch": torch.__version__.split("+")[0]})
            if log:
                print(f"  {model} {spec}: {flops[spec] / 1e9:.3f} GFLOP, {rows[-1]['counted']:.3f} counted, "
                      f"{declared:.3f} declared", file=log, flush=True)
            if counted is not base:
                del counted
    return rows


def specs(model: str) -> list[str]:
    """The method specs counted on ``model``: every registered method of its kind, then its :data:`VARIANTS`."""
    kind = kind_of(model)
    names = [m for m in list_methods() if kind in get_method(m).supports]
    return names + VARIANTS.get(model, []) + VARIANTS.get(f"*{kind}", [])


def table(models: Optional[Sequence[str]] = None, methods: Optional[Sequence[str]] = None, batch: int = BATCH,
          log=sys.stderr) -> list[dict]:
    found = grid_models()
    rows = []
    for model in models or found:
        dataset, recipe = found[model]
        shape, classes = shape_of(dataset, read_yaml(REPO / recipe, "recipe"))
        print(f"{model}: {dataset} shape {shape}, {classes} classes, batch {batch}, recipe {recipe}", file=log,
              flush=True)
        rows += count(model, methods or specs(model), recipe, shape, classes, batch, log=log)
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'method':36s} {'model':16s} {'counted':>8s} {'declared':>8s} {'diff':>7s}"]
    for r in rows:
        diff = 100 * (r["counted"] / r["declared"] - 1)
        lines.append(f"{r['method']:36s} {r['model']:16s} {r['counted']:8.3f} {r['declared']:8.3f} {diff:+6.1f}%")
    return "\n".join(lines)


def write(rows: list[dict], path: Path = FLOPS_TABLE) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, FLOPS_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m icp.flops", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", help="models to count (default: the paper grid's)")
    p.add_argument("--methods", nargs="*", help="method specs NAME[:key=value,...] (default: all, and VARIANTS)")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--out", type=Path, default=FLOPS_TABLE, help="the table to write (default: %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default 1: a busy machine's "
                   "cores shared by several threads are 10x slower than one)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = table(a.models, a.methods, a.batch)
    print(render(rows))
    if not a.no_write:
        out = write(rows, a.out)
        print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
