"""The training engine: one loop for every method.

``Trainer(cfg, run_dir).run()`` trains, evaluates every epoch, checkpoints every epoch and keeps
``record.json`` current. Running it again on the same directory resumes from ``last.pt``; on a run already
complete it returns the record without training. On the CPU a resumed run reproduces the uninterrupted
run bit for bit: every epoch re-seeds the global RNGs and the shuffling generator from (seed, epoch), and the
checkpoint carries model, method, optimizer, scheduler and RNG state.

Order of work (so that a bad config or a missing dataset writes nothing): validate config → load data and
build splits → build model/method/optimizer → create the run directory and write the record.

Lifecycle (:mod:`icp.lifecycle`, statuses in :mod:`icp.records`): one process per run directory
(:mod:`icp.runlock`); a checkpoint that cannot be read falls back to the one kept back
(:func:`icp.checkpoint.load_resumable`); a loss that turns NaN/inf ends the run as ``diverged`` at the end of that
epoch, naming the first non-finite step (found without a device sync per step); Ctrl-C or a termination signal leaves
it ``interrupted``; a job that its scheduler requeues (``stop_status = "requeued"``, set by the submitit job) leaves
it ``requeued``; a trainer that outlives its requeued job (an orphan: :func:`icp.records.taken_back`) stops at the
end of its epoch and leaves it ``requeued``.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from icp import atomic, checkpoint, data, lifecycle, loaders, model_registry, records, runlock, trackers
from icp.config import Config
from icp.methods import MethodContext, build_method
from icp.metrics import (HIGHER_IS_BETTER, ClassifierFeatures, EvalMetrics, GenerativeMetrics, InceptionFeatures,
                         headline_text, inception_weights, is_inception)
from icp.schema import ConfigError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def build_optimizer(cfg: Config, params, device: torch.device) -> torch.optim.Optimizer:
    o = cfg.optim
    params = list(params)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if o.name == "sgd":
        try:
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay, **fast)
        except (TypeError, RuntimeError):  # torch without fused SGD
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **fast)


def lr_factor(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (per-iteration; milestones land on epoch starts)."""
    s, epochs = cfg.schedule, cfg.train.epochs
    e = step / steps_per_epoch
    warm = 1.0
    if s.warmup_epochs > 0:
        warm = min(1.0, (step + 1) / (s.warmup_epochs * steps_per_epoch))
    if s.name == "multistep":
        milestones = [round(m * epochs) if m < 1 else m for m in s.milestones]
        factor = s.gamma ** sum(e >= m for m in milestones)
    elif s.name == "cosine":
        floor = s.min_lr / cfg.optim.lr
        factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs))
    else:
        factor = 1.0
    return warm * factor


def _better(metric: str, new: float, old: Optional[float]) -> bool:
    if old is None:
        return True
    return new > old if HIGHER_IS_BETTER[metric] else new < old


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, run_id: Optional[str] = None, job: Optional[dict] = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = pick_device(cfg.train.device)
        self.run_id = run_id  # the grid's id; default records.run_id(cfg)
        self.job = job  # this process's entry in record["jobs"]; default records.job_info()
        self.stop_status: Optional[str] = None  # set from a signal handler: the status an interruption records
        self.best: Optional[dict] = None  # {"epoch", "value"} of the best validation epoch so far (in last.pt)

    # ------------------------------------------------------------------------------------------ set-up
    def _existing(self) -> Optional[dict]:
        """The checkpoint to resume from, after checking that it belongs to this config."""
        warn = lambda msg: print(f"icp: warning: {msg}", file=sys.stderr, flush=True)
        ckpt = checkpoint.load_resumable(self.run_dir / "last.pt", warn)
        if ckpt is None:
            return None
        if ckpt["config_digest"] != self.cfg.digest():
            diff = _differences(ckpt.get("config") or {}, self.cfg.to_dict())
            shown = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in diff[:4]) + (
                f" and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise ConfigError(f"{self.run_dir} holds a run of another config ({shown or 'digest differs'}); "
                              "use a new --out directory")
        return ckpt

    def setup(self, splits: Optional[data.Splits] = None) -> None:
        """Build everything a run needs; ``splits`` replaces the configured dataset (benchmarks only)."""
        cfg, dev = self.cfg, self.device
        tr = cfg.train
        checkpoint.seed_everything(tr.seed)
        if tr.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = dev.type == "cuda" and not tr.deterministic
        self.splits = splits if splits is not None else data.build_splits(cfg)
        info = self.splits.info
        self.model = model_registry.build_model(cfg.model.name, info.num_classes, info.in_channels,
                                                self.splits.train.images.shape[1], **cfg.model.options)
        self.model.to(dev)
        self.channels_last = tr.channels_last and dev.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        n = len(self.splits.train)
        self.steps_per_epoch = n // tr.batch_size if cfg.data.drop_last else math.ceil(n / tr.batch_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size: {tr.batch_size} exceeds the {n} training images with drop_last")
        _, h, w, c = self.splits.train.images.shape
        ctx = MethodContext(info.num_classes, n, tr.epochs, self.steps_per_epoch, dev,
                            torch.from_numpy(self.splits.train.labels), self.run_dir, (c, h, w),
                            (tuple(-m / s for m, s in zip(info.mean, info.std)),
                             tuple((1 - m) / s for m, s in zip(info.mean, info.std))),
                            model_name=cfg.model.name, dataset=cfg.data.dataset)
        self.method = build_method(cfg.method.name, self.model, cfg.method.options, ctx).to(dev)
        self.params = list(self.method.trainable_parameters())
        self.optimizer = build_optimizer(cfg, self.params, dev)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(cfg, step, self.steps_per_epoch))
        self.train_loader = loaders.make_train_loader(cfg.data.loader, self.splits.train, info, dev, cfg.data.augment,
                                                      cfg.data.num_workers, self.channels_last)
        ev = (info, dev, tr.eval_batch_size, self.channels_last)
        self.test_loader = loaders.EvalLoader(self.splits.test, *ev)
        self.val_loader = loaders.maybe_loader(self.splits.val, *ev)
        # a noise scenario's clean validation labels: the oracle metric val_clean, scored on the same forward pass as
        # val (the noisy labels every choice reads); never a choice
        oracle = getattr(self.splits, "val_clean_labels", None)
        self.val_clean_labels = (torch.from_numpy(oracle).to(dev) if oracle is not None and self.val_loader is not None
                                 and not getattr(self.model, "generative", False) else None)
        self.oracle_metrics = EvalMetrics(info.num_classes, dev) if self.val_clean_labels is not None else None
        self.generative = bool(getattr(self.model, "generative", False))
        self.metrics = (GenerativeMetrics(info.mean, info.std, dev, self._fid_features(info))
                        if self.generative else EvalMetrics(info.num_classes, dev))
        self.mark_cudagraph_steps = tr.compile == "reduce-overhead" and dev.type == "cuda"
        if tr.compile != "none":
            self.model.compile(mode=None if tr.compile == "default" else tr.compile)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if tr.bf16 and dev.type == "cuda"
                         else contextlib.nullcontext())
        self.progress_disabled = None if tr.progress is None else not tr.progress

    def _fid_features(self, info) -> Optional[torch.nn.Module]:
        """FID's feature network from ``train.fid_features``: Inception-v3 (``inception[:PATH]``), a classifier run
        of this dataset (its penultimate layer), or None."""
        src = self.cfg.train.fid_features
        if not src:
            return None
        if is_inception(src):
            return InceptionFeatures(inception_weights(src))
        run = checkpoint.trained(src, "train.fid_features", dataset=self.cfg.data.dataset)
        net = run.model(info.num_classes, info.in_channels)
        return ClassifierFeatures(net, info.mean, info.std, f"{run.config['model']['name']} penultimate layer of {src}")

    # ------------------------------------------------------------------------------------------ loops
    def train_step(self, batch, epoch: int, sums: dict, correct: torch.Tensor, step: int = 0) -> int:
        """One optimizer step; adds this batch's summed losses to ``sums["total"]`` (a tensor, in the order of
        ``sums["names"]``) and its correct predictions to ``correct``, and records in ``sums["first_bad"]`` the
        first ``step`` whose loss is not finite, all without a device sync. Returns the number
        of training samples the step counts: ``len(out.labels)`` where the method returns them (CS-KD: its
        anchors, not the extra pair images), else ``len(batch.y)``."""
        method, cfg = self.method, self.cfg
        if self.mark_cudagraph_steps:  # outputs of the previous step's compiled graphs may now be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            out = method.forward_train(batch, epoch)
        values = list(out.losses.values())
        loss = values[0] if len(values) == 1 else torch.stack([v.float() for v in values]).sum()
        loss.backward()
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            method.after_step(batch, out, epoch)
            y = batch.y if out.labels is None else out.labels
            stats = torch.stack([v.float() for v in (*values, loss)]) * len(y)
            if "total" not in sums:
                sums["names"], sums["total"] = [*out.losses, "loss"], torch.zeros_like(stats)
                sums["first_bad"] = torch.full((), -1, dtype=torch.long, device=stats.device)
            sums["total"] += stats
            if out.stats:
                diag = torch.stack([v.detach().float() for v in out.stats.values()]) * len(y)
                if "diag" not in sums:
                    sums["diag_names"], sums["diag"] = list(out.stats), torch.zeros_like(diag)
                sums["diag"] += diag
            fb = sums["first_bad"]
            sums["first_bad"] = torch.where((fb < 0) & ~torch.isfinite(loss.detach().float()), step, fb)
            if out.logits is not None:
                correct += (out.logits.argmax(1) == y).sum()
        return len(y)

    def index_batches(self, gen: torch.Generator) -> list[torch.Tensor]:
        labels = torch.from_numpy(self.splits.train.labels)
        tr = self.cfg.train
        batches = self.method.batch_sampler(labels, tr.batch_size, self.cfg.data.drop_last, gen)
        if batches is None:
            batches = loaders.default_index_batches(len(labels), tr.batch_size, self.cfg.data.drop_last, gen)
        return list(batches)

    def train_epoch(self, epoch: int) -> dict:
        cfg, method = self.cfg, self.method
        seed = epoch_seed(cfg.train.seed, epoch)
        checkpoint.seed_everything(seed)
        gen = torch.Generator().manual_seed(seed)
        batches = self.index_batches(gen)
        method.train()
        method.on_epoch_start(epoch)
        sums: dict = {}
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        bar = tqdm(self.train_loader.epoch(batches, gen), total=len(batches), leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=self.progress_disabled)
        for step, batch in enumerate(bar):
            seen += self.train_step(batch, epoch, sums, correct, step)
        train = dict(zip(sums["names"], (sums["total"] / seen).tolist()))  # one device sync per epoch
        diagnostics = dict(zip(sums["diag_names"], (sums["diag"] / seen).tolist())) if "diag" in sums else None
        first_bad = int(sums["first_bad"])
        if first_bad >= 0:
            raise Diverged(f"loss is {float('nan') if math.isnan(train['loss']) else train['loss']} at epoch "
                           f"{epoch + 1}, step {first_bad + 1} of {len(batches)} (first non-finite step)")
        train["acc"] = None if self.generative else int(correct) / seen
        elapsed = time.perf_counter() - start
        return {"train": train, "diagnostics": diagnostics, "time_s": elapsed, "images": seen,
                "images_per_s": seen / elapsed}

    @torch.no_grad()
    def evaluate(self, loader, oracle_labels: Optional[torch.Tensor] = None) -> dict[str, float]:
        """The metrics of ``loader``'s split; with ``oracle_labels`` (aligned with the loader's images) the same
        logits are also scored against them into ``self.oracle_metrics`` (:meth:`evaluate_val`)."""
        model = self.method.eval_model()
        was_training = model.training
        model.eval()
        seen = 0
        for x, y in loader:
            with self.autocast:
                if self.generative:
                    self.metrics.update(model, x)
                    continue
                logits = model(x)
            self.metrics.update(logits, y)
            if oracle_labels is not None:
                self.oracle_metrics.update(logits, oracle_labels[seen:seen + len(y)])
            seen += len(y)
        model.train(was_training)
        return self.metrics.compute()

    def evaluate_val(self) -> tuple[Optional[dict], Optional[dict]]:
        """(val, val_clean): the validation metrics on the labels of the setting (noisy under a noise scenario: what
        every choice reads), and under a noise scenario the oracle metrics on the clean labels (else None)."""
        if self.val_loader is None:
            return None, None
        if self.val_clean_labels is None:
            return self.evaluate(self.val_loader), None
        val = self.evaluate(self.val_loader, self.val_clean_labels)
        return val, self.oracle_metrics.compute()

    # ------------------------------------------------------------------------------------------ run
    def run(self, max_epochs: Optional[int] = None, lock_wait_s: float = 0.0) -> dict:
        """Train to ``train.epochs`` (or stop after ``max_epochs`` more epochs in this call); return the record.

        Holds the run directory's lock (waiting up to ``lock_wait_s`` for another holder); a directory that this
        call created and that would hold nothing but the lock is removed again."""
        created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            with runlock.hold(self.run_dir, lock_wait_s):
                record = self._run(max_epochs)
            if record["status"] in records.TERMINAL:  # a final run is never trained again: no lock to keep
                (self.run_dir / runlock.LOCK_NAME).unlink(missing_ok=True)
            return record
        finally:
            if created and [p.name for p in self.run_dir.iterdir()] == [runlock.LOCK_NAME]:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _run(self, max_epochs: Optional[int]) -> dict:
        """One attempt at the run: the epoch loop; the record's lifecycle is :class:`icp.lifecycle.Attempt`'s."""
        ckpt = self._existing()
        if ckpt is not None and ckpt["record"]["status"] in records.TERMINAL:
            return lifecycle.ended(self.run_dir, ckpt["record"])
        attempt = lifecycle.Attempt(self.run_dir, self.cfg, self.checkpoint_state)  # its compute: set-up included
        self.setup()
        record, start_epoch = self._begin(ckpt)
        attempt.begin(record, self.job)
        tr = self.cfg.train
        stop = tr.epochs if max_epochs is None else min(tr.epochs, start_epoch + max_epochs)
        tracking = trackers.Trackers(self.run_dir)  # train.loggers (none: no-ops), closed with the attempt
        try:
            tracking.start(self.cfg, record, start_epoch)
            bar = tqdm(range(start_epoch, stop), initial=start_epoch, total=tr.epochs, desc=record["run_id"],
                       disable=self.progress_disabled)
            for epoch in bar:
                entry = self._epoch(epoch, record)
                if not attempt.saved_epoch(epoch + 1, final=epoch + 1 == tr.epochs):
                    break  # an orphan: SLURM requeued its job, and that job resumes the run
                tracking.log_epoch(entry)
                if entry["test"] is not None:
                    bar.set_postfix({"test": headline_text(entry["test"]), "loss": f"{entry['train']['loss']:.3f}"})
                if bar.disable and tr.progress is None:  # no terminal (a job's log, a pipe): one line per epoch
                    print(_epoch_line(record, entry, tr.epochs, attempt.seconds(), epoch + 1 - start_epoch),
                          file=sys.stderr, flush=True)
        except Diverged as exc:
            attempt.diverged(exc)
        except BaseException as exc:
            attempt.stopped(exc, self.stop_status)
            raise
        finally:
            tracking.close(record["status"])
        return record

    def _begin(self, ckpt: Optional[dict]) -> tuple[dict, int]:
        """(record, first epoch to train): a new run's, or the checkpoint's with the training state restored."""
        if ckpt is None:
            record = records.new_record(self.cfg, self.splits.summary, self.device,
                                        sum(p.numel() for p in self.method.eval_model().parameters()), self.run_id)
            self.best = None
            if self.generative:  # which network FID's features come from: FIDs compare only alike ones
                fid = getattr(self.metrics.fid_recon, "inception", None)
                record["fid_features"] = getattr(fid, "name", None)
            atomic.write(_yaml(self.cfg.to_dict()), self.run_dir / "config.yaml")
            return record, 0
        self.method.load_state_dict(ckpt["method"])
        self.method.load_extra_state(ckpt["method_extra"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.best = ckpt["best"]
        return lifecycle.resumed(ckpt, self.cfg.train.epochs, self.device), ckpt["epoch"]

    def _epoch(self, epoch: int, record: dict) -> dict:
        """Train and evaluate epoch ``epoch`` (0-based) and enter it in ``record``: its entry, the last evaluation
        and the best one so far (chosen on validation, its model in best.pt). Returns the entry."""
        tr = self.cfg.train
        t0 = time.perf_counter()
        entry = {"epoch": epoch + 1, **self.train_epoch(epoch), "lr": self.optimizer.param_groups[0]["lr"]}
        final = epoch + 1 == tr.epochs
        if self.generative:  # FIDs every train.fid_every epochs and at the last
            self.metrics.fid_on = (epoch + 1) % tr.fid_every == 0 or final
        evaluated = final or (epoch + 1) % (tr.eval_every or 1) == 0  # train.eval_every: the others null
        entry["test"] = self.evaluate(self.test_loader) if evaluated else None
        entry["val"], oracle = self.evaluate_val() if evaluated else (None, None)
        if self.val_clean_labels is not None:  # a noise scenario: the oracle beside it, never a choice
            entry["val_clean"] = oracle
        record["epochs"].append(entry)
        record["wall_time_s"] += time.perf_counter() - t0
        record["images_per_s"] = records.throughput(record["epochs"])
        scores = {"test": entry["test"], "val": entry["val"], **({"val_clean": oracle} if "val_clean" in entry else {})}
        if evaluated:
            record["last"] = {"epoch": epoch + 1, **scores}
        metric = tr.best_metric if tr.best_metric in (entry["test"] or {}) else "elbo"  # a VAE: elbo
        if entry["val"] is not None and entry["val"][metric] is not None and _better(
                metric, entry["val"][metric], self.best and self.best["value"]):
            self.best = {"epoch": epoch + 1, "value": entry["val"][metric]}
            record["best"] = {"epoch": epoch + 1, "metric": f"val.{metric}", **scores}
            checkpoint.atomic_save({"epoch": epoch + 1, "model": self.method.eval_model().state_dict(),
                                    "config": self.cfg.to_dict(), "record_best": record["best"]},
                                   self.run_dir / "best.pt")
        return entry

    def checkpoint_state(self, epoch: int, record: dict) -> dict:
        """The checkpoint (``last.pt``) after ``epoch`` epochs, holding ``record`` (:mod:`icp.checkpoint`)."""
        return {
            "format": checkpoint.CHECKPOINT_FORMAT, "epoch": epoch, "config": self.cfg.to_dict(),
            "config_digest": self.cfg.digest(), "method": self.method.state_dict(),
            "method_extra": self.method.extra_state(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": checkpoint.rng_state(), "record": record,
            "best": self.best,
        }


def _differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where two config trees differ."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append((f"{prefix}{key}", x, y))
    return out


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _epoch_line(record: dict, entry: dict, total: int, elapsed: float, done_here: int) -> str:
    """The line an epoch prints where no progress bar is shown: epoch of total, training loss, the test headline
    metric (when evaluated), images/s, time since this attempt started and the estimated time to the end."""
    test = ""
    if entry.get("test"):
        test = f"  test {headline_text(entry['test'])}"
    eta = elapsed / done_here * (total - entry["epoch"])
    return (f"{record['run_id']}  epoch {entry['epoch']}/{total}  loss {entry['train']['loss']:.4f}{test}  "
            f"{entry.get('images_per_s') or 0:.0f} img/s  elapsed {_clock(elapsed)}  eta {_clock(eta)}")


def _yaml(tree: dict) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)
