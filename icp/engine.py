"""The training engine: one loop for every method.

``Trainer(cfg, run_dir).run()`` trains, evaluates every epoch, checkpoints every epoch and keeps
``record.json`` current. Running it again on the same directory resumes from ``last.pt``; on a run already
complete it returns the record without training. On the CPU a resumed run reproduces the uninterrupted
run bit for bit: every epoch re-seeds the global RNGs and the shuffling generator from (seed, epoch), and the
checkpoint carries model, method, optimizer, scheduler and RNG state.

Order of work (so that a bad config or a missing dataset writes nothing): validate config → load data and
build splits → build model/method/optimizer → create the run directory and write the record.

Lifecycle (statuses in :mod:`icp.records`): one process per run directory (:mod:`icp.runlock`); a checkpoint that
cannot be read falls back to the one kept back (:func:`icp.checkpoint.load_resumable`); a loss that turns NaN/inf
ends the run as ``diverged`` at the end of that epoch, naming the first non-finite step (found without a device
sync per step); Ctrl-C or a termination signal leaves it ``interrupted``; a job that its scheduler requeues
(``stop_status = "requeued"``, set by the submitit job) leaves it ``requeued``; a trainer that outlives its
requeued job (an orphan: :func:`icp.records.taken_back`) stops at the end of its epoch and leaves it ``requeued``.
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

from icp import checkpoint, data, loaders, models, records, runlock, trackers
from icp.config import Config, ConfigError
from icp.methods import MethodContext, build_method
from icp.metrics import (HIGHER_IS_BETTER, ClassifierFeatures, EvalMetrics, GenerativeMetrics, InceptionFeatures,
                         headline_text, inception_weights, is_inception)


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
        self.model = models.build_model(cfg.model.name, info.num_classes, info.in_channels,
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
    def evaluate(self, loader) -> dict[str, float]:
        model = self.method.eval_model()
        was_training = model.training
        model.eval()
        for x, y in loader:
            with self.autocast:
                if self.generative:
                    self.metrics.update(model, x)
                    continue
                logits = model(x)
            self.metrics.update(logits, y)
        model.train(was_training)
        return self.metrics.compute()

    # ------------------------------------------------------------------------------------------ run
    def _save(self, epoch: int, record: dict, best: Optional[dict]) -> None:
        checkpoint.atomic_save(self._state(epoch, record, best), self.run_dir / "last.pt", keep_previous=True)

    def _state(self, epoch: int, record: dict, best: Optional[dict]) -> dict:
        return {
            "format": checkpoint.CHECKPOINT_FORMAT, "epoch": epoch, "config": self.cfg.to_dict(),
            "config_digest": self.cfg.digest(), "method": self.method.state_dict(),
            "method_extra": self.method.extra_state(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": checkpoint.rng_state(), "record": record, "best": best,
        }

    def _write_figure_data(self) -> None:
        """The arrays of the figures drawn from this run's model (:mod:`icp.figure_data`), from its final last.pt,
        so that the login side drawing them imports no torch. A failure costs the run nothing: the figure then
        computes them from last.pt itself."""
        from icp import figure_data

        try:
            figure_data.write(self.run_dir, self.cfg.method.name, dict(self.cfg.method.options), self.cfg.model.name)
        except Exception as exc:  # noqa: BLE001 - the run is complete whatever a figure's arrays do
            print(f"warning: {self.run_dir}: no {figure_data.NAME} ({type(exc).__name__}: {exc}); its figures compute "
                  "it from last.pt", file=sys.stderr)

    def _finish_diverged(self, record: dict, best: Optional[dict]) -> None:
        """Make ``diverged`` final: last.pt (the last finite epoch, if any) carries the record from now on."""
        path = self.run_dir / "last.pt"
        state = checkpoint.load(path) if path.exists() else self._state(0, record, best)
        state["record"] = record
        checkpoint.atomic_save(state, path)

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

    @staticmethod
    def _stop_orphaned(record: dict, epoch: int) -> None:
        """This trainer outlived its SLURM job (requeued while its node's slurmd was lost, say): the record says
        ``requeued`` again, with a note, and the trainer stops with epoch ``epoch`` saved, leaving its device to
        SLURM and the run to the requeued job, which resumes from ``last.pt``."""
        note = (f"job {record['jobs'][-1]['job_id']} was requeued by SLURM while this trainer still ran (an orphan); "
                f"it stopped after epoch {epoch} and the requeued job resumes the run")
        record["status"] = "requeued"
        record.setdefault("notes", []).append(f"{records.now()}: {note}")
        print(f"{record['run_id']}: {note}", file=sys.stderr, flush=True)

    def _earlier_attempts(self, record_path: Path, jobs: list) -> list:
        """The ``jobs`` of the earlier attempts: those of ``record.json`` where it is this config's run and knows at
        least the checkpoint's attempts (it has their final seconds), else ``jobs`` (the checkpoint's)."""
        disk = records.load(record_path.parent).record  # record.json, else a stopped run's record set aside
        if disk is None:
            return list(jobs)
        if disk.get("config_digest") != self.cfg.digest() or len(disk.get("jobs") or []) < len(jobs):
            return list(jobs)
        return list(disk["jobs"])

    def _run(self, max_epochs: Optional[int]) -> dict:
        record_path = self.run_dir / "record.json"
        ckpt = self._existing()
        if ckpt is not None and ckpt["record"]["status"] in records.TERMINAL:
            record = ckpt["record"]
            if records.load(self.run_dir).record != record:
                # Snakemake removes a job's output before it runs the job (its job killed with it after the run
                # ended, it runs it again): the record comes back exactly as the run ended, its time stamp included
                records.write(record, record_path, stamp=False)
            (self.run_dir / records.STOPPED).unlink(missing_ok=True)
            return record
        attempt_start = time.perf_counter()

        def save(record: dict) -> None:
            records.stamp_compute(record, time.perf_counter() - attempt_start)
            records.write(record, record_path)

        def save_final(epoch: int, record: dict, best: Optional[dict]) -> None:
            """A final record: stamped once, then the same dict in last.pt and in record.json (a run written again
            from its checkpoint reads byte for byte as it ended)."""
            records.stamp_compute(record, time.perf_counter() - attempt_start)
            record["updated_at"] = records.now()
            self._save(epoch, record, best)
            self._write_figure_data()  # before the record says complete: a figure step finds it with the record
            records.write(record, record_path, stamp=False)

        self.setup()
        tr = self.cfg.train
        if ckpt is None:
            record = records.new_record(self.cfg, self.splits.summary, self.device,
                                        sum(p.numel() for p in self.method.eval_model().parameters()), self.run_id)
            best, start_epoch = None, 0
            if self.generative:  # which network FID's features come from: FIDs compare only alike ones
                fid = getattr(self.metrics.fid_recon, "inception", None)
                record["fid_features"] = getattr(fid, "name", None)
            (self.run_dir / "config.yaml").write_text(_yaml(self.cfg.to_dict()))
        else:
            self.method.load_state_dict(ckpt["method"])
            self.method.load_extra_state(ckpt["method_extra"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            checkpoint.set_rng_state(ckpt["rng"])
            record, best, start_epoch = ckpt["record"], ckpt["best"], ckpt["epoch"]
            record["resumed"] += 1
            source = ckpt.get("loaded_from", "last.pt")
            if ckpt.get("fallback"):  # the record keeps why it did not resume from last.pt
                record.setdefault("notes", []).append(f"{records.now()}: {ckpt['fallback']}")
            print(f"{record['run_id']}: resumed from epoch {start_epoch} of {tr.epochs} ({source}"
                  f"{': last.pt was unreadable' if source != 'last.pt' else ''})", file=sys.stderr,
                  flush=True)  # stderr, as the epoch lines
            record["env"] = records.environment(self.device)
            record["code"] = records.code_version()
        # the attempts before this one, as record.json last saw them: it is written after the checkpoint and when an
        # attempt ends, so it holds the compute of work the checkpoint lost (a failed or killed attempt's epoch)
        record["jobs"] = self._earlier_attempts(record_path, record.get("jobs") or [])
        record["jobs"].append(dict(self.job or records.job_info()))
        record["status"], record["error"] = "running", None
        save(record)  # record.json now holds every attempt: a stopped run's record set aside is spent
        (self.run_dir / records.STOPPED).unlink(missing_ok=True)
        stop = tr.epochs if max_epochs is None else min(tr.epochs, start_epoch + max_epochs)
        saved = _as_saved(record)  # what last.pt holds: the record never runs ahead of its checkpoint
        tracking = trackers.Trackers(self.run_dir)  # train.loggers (none: no-ops), closed with the attempt
        try:
            tracking.start(self.cfg, record, start_epoch)
            bar = tqdm(range(start_epoch, stop), initial=start_epoch, total=tr.epochs, desc=record["run_id"],
                       disable=self.progress_disabled)
            for epoch in bar:
                t0 = time.perf_counter()
                entry = {"epoch": epoch + 1, **self.train_epoch(epoch),
                         "lr": self.optimizer.param_groups[0]["lr"]}
                final = epoch + 1 == tr.epochs
                if self.generative:  # FIDs every train.fid_every epochs and at the last
                    self.metrics.fid_on = (epoch + 1) % tr.fid_every == 0 or final
                evaluated = final or (epoch + 1) % (tr.eval_every or 1) == 0  # train.eval_every: the others null
                entry["test"] = self.evaluate(self.test_loader) if evaluated else None
                entry["val"] = self.evaluate(self.val_loader) if evaluated and self.val_loader is not None else None
                record["epochs"].append(entry)
                record["wall_time_s"] += time.perf_counter() - t0
                record["images_per_s"] = records.throughput(record["epochs"])
                if evaluated:
                    record["last"] = {"epoch": epoch + 1, "test": entry["test"], "val": entry["val"]}
                metric = tr.best_metric if tr.best_metric in (entry["test"] or {}) else "elbo"  # a VAE: elbo
                if entry["val"] is not None and entry["val"][metric] is not None and _better(
                        metric, entry["val"][metric], best and best["value"]):
                    best = {"epoch": epoch + 1, "value": entry["val"][metric]}
                    record["best"] = {"epoch": epoch + 1, "metric": f"val.{metric}",
                                      "test": entry["test"], "val": entry["val"]}
                    checkpoint.atomic_save({"epoch": epoch + 1, "model": self.method.eval_model().state_dict(),
                                            "config": self.cfg.to_dict(), "record_best": record["best"]},
                                           self.run_dir / "best.pt")
                if final:
                    record["status"] = "complete"
                    save_final(epoch + 1, record, best)
                else:
                    records.stamp_compute(record, time.perf_counter() - attempt_start)
                    self._save(epoch + 1, record, best)
                    if records.taken_back(self.run_dir, record["jobs"][-1].get("job_id")):
                        self._stop_orphaned(record, epoch + 1)  # SLURM requeued its job: that job resumes the run
                        save(record)
                        break
                    save(record)
                saved = _as_saved(record)
                tracking.log_epoch(entry)
                if evaluated:
                    bar.set_postfix({"test": headline_text(entry["test"]),
                                     "loss": f"{entry['train']['loss']:.3f}"})
                if bar.disable and tr.progress is None:  # no terminal (a job's log, a pipe): one line per epoch
                    print(_epoch_line(record, entry, tr.epochs, time.perf_counter() - attempt_start,
                                      epoch + 1 - start_epoch), file=sys.stderr, flush=True)
        except Diverged as exc:
            record["status"], record["error"] = "diverged", f"Diverged: {exc}"
            records.stamp_compute(record, time.perf_counter() - attempt_start)
            record["updated_at"] = records.now()
            self._finish_diverged(record, best)  # last.pt first: a record.json that says diverged has its checkpoint
            records.write(record, record_path, stamp=False)
        except BaseException as exc:
            if self.stop_status is not None:
                record["status"] = self.stop_status
            elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                record["status"] = "interrupted"
            else:
                record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
            _back_to_checkpoint(record, saved)
            save(record)
            raise
        finally:
            tracking.close(record["status"])
        return record


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


def _as_saved(record: dict) -> dict:
    """The record's epoch-dependent fields as the checkpoint about to hold them (:func:`_back_to_checkpoint`)."""
    return {"n": len(record["epochs"]), **{k: record[k] for k in ("wall_time_s", "images_per_s", "last", "best")}}


def _back_to_checkpoint(record: dict, saved: dict) -> None:
    """Drop the epochs that ``last.pt`` does not hold (an epoch trained but whose checkpoint failed to save, e.g. on
    a full disk): a resumed run trains them again, so the record must not claim them. Their seconds stay in
    ``jobs`` (the attempt's compute)."""
    del record["epochs"][saved["n"]:]
    record.update({k: v for k, v in saved.items() if k != "n"})


def _yaml(tree: dict) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)
