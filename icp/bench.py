"""``icp bench``: training throughput (images/s) per method and model, with each method's speed relative to its
model's baseline (``ce`` for a classifier, ``vae`` for the VAE; :data:`icp.results.frames.BASELINE`).

Every row runs the engine's own ``Trainer.train_step`` (forward_train, backward, optimizer and scheduler step,
loss bookkeeping) fed by the configured training loader, so the numbers are those of real training. The methods
of one model are timed in the same process in alternating rounds (median round kept), so drift affects all of
them alike; the ``speed_vs_baseline`` column divides the baseline's step time by the method's on the same model
(images/s relative to the baseline's at the same batch size, the convention of the tables' cost column: 0.25 is a
step four times as long), which is the figure that compares across machines. Methods that do not train a model's kind (``ls`` on the VAE) are skipped
for that model, with a line saying so.

A method may carry options, ``NAME[:key=value,...]`` (:func:`parse_variant`), so that variants are timed side by
side: ``icp bench --methods ce icp-sgd:steps=1 icp-sgd icp-sgd:steps=10 icp-sgd:reuse_clean_grad=true``.

``--data synthetic`` feeds random uint8 images of a given shape (e.g. 3x32x32 CIFAR shapes on a machine
without CIFAR): throughput does not depend on pixel values, and such rows are labelled as synthetic.

A method that distils from a pre-trained model of the same architecture (a ``teacher`` option: AI-KD) is given,
unless ``--set method.options.teacher=...`` names one, the ``ce`` row's model of the same process saved as a
``best.pt`` in a temporary directory: it runs the same network the real teacher would, and step time does not
depend on weight values. ``img_per_s`` counts training samples (CS-KD's pair images are extra work per sample,
not extra samples, see ``Trainer.train_step``); ``speed_vs_baseline`` compares step times at the same batch size.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from icp import checkpoint, config, data
from icp.engine import Trainer
from icp.methods import get as get_method
from icp.schema import ConfigError


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


class _Timed:
    """A set-up trainer that can be timed for a number of steps at a time."""

    def __init__(self, cfg: config.Config, splits: Optional[data.Splits]):
        self.cfg = cfg
        self.trainer = Trainer(cfg, run_dir="/nonexistent-bench-run")
        self.trainer.setup(splits)
        self.trainer.method.train()
        self.gen = torch.Generator().manual_seed(0)
        self.sums: dict = {}
        self.correct = torch.zeros((), device=self.trainer.device, dtype=torch.long)
        self.batches = self._batches()

    def _batches(self):
        while True:
            yield from self.trainer.train_loader.epoch(self.trainer.index_batches(self.gen), self.gen)

    def steps(self, n: int) -> tuple[int, float]:
        """Run n steps (the last epoch, so a method with a warm-up phase does its full work); (images, seconds)."""
        device = self.trainer.device
        _sync(device)
        seen, start = 0, time.perf_counter()
        for _ in range(n):
            seen += self.trainer.train_step(next(self.batches), self.cfg.train.epochs - 1, self.sums, self.correct)
        _sync(device)
        return seen, time.perf_counter() - start


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``NAME[:key=value,...]`` -> (method name, config overrides). A bare key is a method option
    (``icp-sgd:steps=10`` sets ``method.options.steps``); a dotted key is any config key (``icp:train.bf16=true``).
    The row is labelled with the whole spec, so variants of one method sit side by side."""
    name, _, rest = spec.partition(":")
    sets = [f"method.name={name}"]
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"bench method '{spec}': expected key=value after ':', got '{item}'")
        sets.append(f"{key}={value}" if "." in key else f"method.options.{key}={value}")
    return name, sets


def teacher_overrides(method: str, overrides: Sequence[str], ce: _Timed, folder: Path) -> list[str]:
    """``method.options.teacher=<the ce row's model saved as best.pt>`` for a method with a ``teacher`` option
    that the overrides do not set; nothing otherwise."""
    if "teacher" not in {f.name for f in dataclasses.fields(get_method(method).Options)} or any(
            o.startswith("method.options.teacher=") for o in overrides):
        return []
    path = folder / "best.pt"
    checkpoint.atomic_save({"model": ce.trainer.model.state_dict(), "config": ce.cfg.to_dict()}, path)
    return [f"method.options.teacher={path}"]


def run(models: Sequence[str], methods: Sequence[str], device: str, batch_size: int, steps: int, warmup: int,
        dataset: str, shape: Optional[tuple[int, int, int]], overrides: Sequence[str] = (), profile: bool = False,
        rounds: int = 3):
    """Time every method on every model. Methods of one model are timed in ``rounds`` alternating rounds of
    ``steps`` steps each and the median round is kept, so slow drift (thermal, other load) hits all alike."""
    import pandas as pd

    from icp.results.frames import BASELINE, kind_of

    splits = synthetic_splits(shape, max(batch_size * 8, 4096)) if dataset == "synthetic" else None
    rows = []
    for model in models:
        kind = kind_of(model)
        baseline = BASELINE[kind][0]
        timed = {}
        asked = [m for m in methods if m != baseline]
        skipped = [m for m in asked if kind not in get_method(parse_variant(m)[0]).supports]
        if skipped:
            print(f"  {model}: skipping {', '.join(skipped)} (they do not train {kind} models)", flush=True)
        for_model = [baseline] + [m for m in asked if m not in skipped]
        for i, method in enumerate(for_model):
            print(f"  {model}: setting up {method} ({i + 1}/{len(for_model)}) and {warmup} warm-up steps", file=sys.stderr,
                  flush=True)
            sets = [f"model.name={model}", f"train.device={device}",
                    f"train.batch_size={batch_size}", "train.epochs=1", "train.progress=false",
                    "data.train_subset=8192", "data.test_subset=1000", *overrides, *parse_variant(method)[1]]
            # synthetic images stand for an image folder of their size (a VAE is built for the data's size)
            sets += [f"data.dataset={dataset}"] if dataset != "synthetic" else [
                "data.dataset=imagefolder", f"data.image_size={shape[1]}"]
            with tempfile.TemporaryDirectory(prefix="icp-bench-") as tmp:  # a teacher is read at set-up
                if method != baseline:
                    sets += teacher_overrides(parse_variant(method)[0], overrides, timed[baseline], Path(tmp))
                timed[method] = _Timed(config.resolve({}, sets), splits)
            timed[method].steps(warmup)
        per_image = {m: [] for m in for_model}
        for r in range(rounds):
            print(f"  {model}: timing round {r + 1}/{rounds} ({len(for_model)} methods x {steps} steps)",
                  file=sys.stderr, flush=True)
            for method in for_model:
                seen, seconds = timed[method].steps(steps)
                per_image[method].append((seconds / steps, seen / seconds))
        for method in for_model:
            step_s, img_s = sorted(per_image[method])[len(per_image[method]) // 2]
            tr = timed[method].trainer
            rows.append({"model": model, "method": method, "data": tr.splits.info.name, "device": str(tr.device),
                         "batch": batch_size, "step_ms": round(1000 * step_s, 2), "img_per_s": round(img_s, 1),
                         "baseline": baseline})
            print(f"  {model:16s} {method:12s} {img_s:10.1f} img/s", flush=True)
            if profile:
                _profile(timed[method], steps)
        del timed
    table = pd.DataFrame(rows)
    base = table[table.method == table.baseline].set_index("model")["step_ms"]
    # a speed ratio, as the tables' cost column (images/s over the baseline's): 0.25 = four times the step time
    table["speed_vs_baseline"] = (table["model"].map(base) / table["step_ms"]).round(3)
    return table


def _profile(timed: _Timed, steps: int) -> None:
    with torch.profiler.profile() as prof:
        timed.steps(steps)
    key = "self_cuda_time_total" if timed.trainer.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))
