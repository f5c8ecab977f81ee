"""``icp bench``: training throughput (images/s) per method and model, with each method's ratio to ``ce``.

Every row runs the engine's own ``Trainer.train_step`` (forward_train, backward, optimizer and scheduler step,
loss bookkeeping) fed by the configured training loader, so the numbers are those of real training. Rows are
measured in the same process one after another; the ratio column divides a method's step time by ``ce``'s
on the same model, which is the comparable figure across machines.

``--data synthetic`` feeds random uint8 images of a given shape (e.g. 3x32x32 CIFAR shapes on a machine
without CIFAR): throughput does not depend on pixel values, and such rows are labelled as synthetic.
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional, Sequence

import numpy as np
import torch

from icp import config, data
from icp.engine import Trainer


def synthetic_splits(shape: tuple[int, int, int], n: int, num_classes: int = 10) -> data.Splits:
    c, h, w = shape
    rng = np.random.default_rng(0)
    arrays = data.ImageArrays(rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
                              rng.integers(0, num_classes, n).astype(np.int64))
    info = data.DatasetInfo(f"synthetic-{c}x{h}x{w}", num_classes, c, (0.5,) * c, (0.25,) * c)
    small = arrays.take(np.arange(min(n, 1000)))
    return data.Splits(info, arrays, arrays.labels, small, None, {"train_size": n})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: config.Config, steps: int, warmup: int, splits: Optional[data.Splits] = None,
            profile: bool = False) -> dict:
    trainer = Trainer(cfg, run_dir="/nonexistent-bench-run")
    trainer.setup(splits)
    trainer.method.train()
    gen = torch.Generator().manual_seed(0)
    sums: dict = {}
    correct = torch.zeros((), device=trainer.device, dtype=torch.long)

    def batches():
        while True:
            yield from trainer.train_loader.epoch(trainer.index_batches(gen), gen)

    it = batches()
    for _ in range(warmup):
        trainer.train_step(next(it), cfg.train.epochs - 1, sums, correct)
    _sync(trainer.device)
    prof = torch.profiler.profile() if profile else contextlib.nullcontext()
    with prof:
        seen, start = 0, time.perf_counter()
        for _ in range(steps):
            batch = next(it)
            trainer.train_step(batch, cfg.train.epochs - 1, sums, correct)
            seen += len(batch.y)
        _sync(trainer.device)
        elapsed = time.perf_counter() - start
    if profile:
        key = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return {"images_per_s": seen / elapsed, "step_ms": 1000 * elapsed / steps,
            "device": str(trainer.device), "dataset": trainer.splits.info.name}


def run(models: Sequence[str], methods: Sequence[str], device: str, batch_size: int, steps: int, warmup: int,
        dataset: str, shape: Optional[tuple[int, int, int]], overrides: Sequence[str] = (), profile: bool = False):
    import pandas as pd

    methods = ["ce"] + [m for m in methods if m != "ce"]
    splits = synthetic_splits(shape, max(batch_size * 8, 4096)) if dataset == "synthetic" else None
    rows = []
    for model in models:
        for method in methods:
            # The last epoch, so a method with a warm-up (e.g. ICP) is timed doing its full work.
            sets = [f"model.name={model}", f"method.name={method}", f"train.device={device}",
                    f"train.batch_size={batch_size}", "train.epochs=1", "train.progress=false",
                    "data.train_subset=8192", "data.test_subset=1000", *overrides]
            if dataset != "synthetic":
                sets.append(f"data.dataset={dataset}")
            cfg = config.resolve({}, sets)
            res = measure(cfg, steps, warmup, splits, profile)
            rows.append({"model": model, "method": method, "data": res["dataset"], "device": res["device"],
                         "batch": batch_size, "step_ms": round(res["step_ms"], 2),
                         "img_per_s": round(res["images_per_s"], 1)})
            print(f"  {model:16s} {method:12s} {res['images_per_s']:10.1f} img/s", flush=True)
    table = pd.DataFrame(rows)
    ce = table[table.method == "ce"].set_index("model")["step_ms"]
    table["ratio_to_ce"] = (table["step_ms"] / table["model"].map(ce)).round(2)
    return table
