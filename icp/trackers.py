"""Run trackers: optional, offline live views of a training run in TensorBoard, MLflow or W&B (``train.loggers``).

The engine (:class:`icp.engine.Trainer`) calls :meth:`Trackers.start` once it has written a run's record, ``log_epoch`` after
each epoch that the checkpoint and ``record.json`` hold, and ``close`` when the attempt ends. Each configured
tracker then holds:

* at the start: the run id and the resolved config, flattened to dotted keys (``train.epochs``,
  ``method.options.alpha``; values as in config.yaml, lists and null in JSON);
* per epoch, at step ``entry["epoch"]`` (1 for the first epoch): every number of the record's epoch entry, named by
  its path there joined by ``/`` (``train/loss``, ``train/acc``, ``test/top1``, ``val/nll``, ``diagnostics/...``,
  ``lr``, ``time_s``, ``images``, ``images_per_s``), nulls left out (a VAE's ``train/acc``, the epochs that
  ``train.eval_every`` skips): the same numbers as ``record["epochs"]``.

Everything is written inside the run directory, nothing is sent anywhere:

* ``tensorboard``: ``<run_dir>/tensorboard/`` (event files; the run id and config as text summaries at step 0);
* ``mlflow``: ``<run_dir>/mlruns/``, a local file store (experiment ``icp``, one MLflow run named by the run id and
  tagged ``icp.run_id``; the config as params). MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE=true``,
  which this module sets where it is unset, as it does ``MLFLOW_DISABLE_TELEMETRY=true``;
* ``wandb``: ``<run_dir>/wandb/`` in offline mode (``wandb sync`` uploads it later, if ever), its cache, config and
  service logs there too.

A resumed run logs from its resumed epoch on, at the same steps, so that each epoch is held once: TensorBoard's
writer opens with ``purge_step`` (readers drop any step at or after it that an earlier attempt wrote), MLflow goes
on in the same MLflow run and skips the (metric, step) pairs that it already holds, W&B starts another offline run
directory with the same run id (``wandb sync --append``). ``record.json`` stays the one source of truth: a tracker
whose library is missing or that raises is named in one line on stderr, once, and dropped; training goes on.
The libraries are imported only here, and only when a tracker is configured.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from icp.config import LOGGERS

# the record's statuses (icp.records) as MLflow's run statuses
_MLFLOW_STATUS = {"complete": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}


def flat_config(tree: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config dict as dotted key -> value string (strings as they are, everything else in JSON)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def epoch_metrics(entry: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a record's epoch entry by their path joined by '/', without ``epoch`` (the step) and nulls."""
    out = {}
    for key, value in entry.items():
        if not prefix and key == "epoch":
            continue
        if isinstance(value, dict):
            out.update(epoch_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, run_id: str, config: dict[str, str], start_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        log_dir = run_dir / "tensorboard"
        fresh = not any(log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(log_dir), purge_step=start_epoch + 1 if start_epoch else None)
        if fresh:  # at step 0, before every epoch: a text summary later than an epoch would purge it in readers
            self.writer.add_text("run_id", run_id, 0)
            self.writer.add_text("config", "| key | value |\n|---|---|\n" + "\n".join(
                f"| {k} | {v.replace('|', chr(92) + '|')} |" for k, v in config.items()), 0)
        self.writer.flush()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class _MLflow:
    EXPERIMENT = "icp"

    def __init__(self, run_dir: Path, run_id: str, config: dict[str, str], start_epoch: int):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores only when asked for
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reports, no ~/.config id
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
        exp = self.client.get_experiment_by_name(self.EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.EXPERIMENT)
        found = self.client.search_runs([exp_id], filter_string=f"tags.`icp.run_id` = '{run_id}'", max_results=1)
        self.logged: set[tuple[str, int]] = set()
        if found:  # a resumed run: the same MLflow run, without the steps it holds
            self.run = found[0].info.run_id
            for key in found[0].data.metrics:
                self.logged.update((key, m.step) for m in self.client.get_metric_history(self.run, key))
            self.client.update_run(self.run, status="RUNNING")
        else:
            self.run = self.client.create_run(exp_id, run_name=run_id, tags={"icp.run_id": run_id}).info.run_id
            params = [Param(k, v[:500]) for k, v in config.items()]  # 500: the shortest limit of MLflow's versions
            for i in range(0, len(params), 100):  # at most 100 params a batch
                self.client.log_batch(self.run, params=params[i:i + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items() if (k, step) not in self.logged]
        if batch:
            self.client.log_batch(self.run, metrics=batch)
            self.logged.update((m.key, step) for m in batch)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run, status=_MLFLOW_STATUS.get(status, "KILLED"))


class _WandB:
    def __init__(self, run_dir: Path, run_id: str, config: dict[str, str], start_epoch: int):
        home = (run_dir / "wandb").resolve()
        home.mkdir(parents=True, exist_ok=True)
        # offline, and every file of wandb and its service process (started with this environment) inside the run
        self.env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(run_dir.resolve()),
                    "WANDB_CACHE_DIR": str(home / ".cache"), "WANDB_CONFIG_DIR": str(home / ".config"),
                    "WANDB_DATA_DIR": str(home / ".data"), "WANDB_ARTIFACT_DIR": str(home / ".artifacts")}
        with self._environment():
            import wandb

            self.wandb = wandb
            settings = wandb.Settings(mode="offline", silent=True, console="off", disable_git=True,
                                      save_code=False, x_disable_stats=True, x_disable_meta=True)
            rid = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:128]
            self.run = wandb.init(dir=str(run_dir.resolve()), project="icp", id=rid, name=run_id, config=config,
                                  settings=settings, reinit="create_new")

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self, status: str) -> None:
        with self._environment():
            self.run.finish(exit_code=0 if status == "complete" else 1)
            self.wandb.teardown()  # the service process ends with this run: the next one starts its own, inside it


_BACKENDS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}
assert set(_BACKENDS) == set(LOGGERS)


class Trackers:
    """The configured trackers of one attempt of a run; a tracker that raises is named once and dropped."""

    def __init__(self, run_dir: str | Path):
        self.run_dir, self.backends = Path(run_dir), {}

    def start(self, cfg, record: dict, start_epoch: int) -> None:
        """Open the trackers of ``cfg.train.loggers`` for an attempt that trains from ``start_epoch`` (0-based: the
        epochs before it are logged already); a new run logs its run id and config. Imports nothing where no tracker
        is configured."""
        names = list(getattr(cfg.train, "loggers", None) or [])
        config = flat_config(cfg.to_dict()) if names else {}
        for name in names:
            try:
                self.backends[name] = _BACKENDS[name](self.run_dir, record["run_id"], config, start_epoch)
            except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
                self._warn(name, exc)

    def _warn(self, name: str, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = (f"its package is not installed: pip install {_PACKAGES[name]}" if isinstance(exc, ImportError)
               else f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        print(f"icp: warning: {self.run_dir}: tracker {name} dropped ({why}); training goes on, record.json holds "
              "every result", file=sys.stderr, flush=True)

    def _each(self, call) -> None:
        for name, backend in list(self.backends.items()):
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
                del self.backends[name]
                self._warn(name, exc)

    def log_epoch(self, entry: dict) -> None:
        """Log a record's epoch entry (after the checkpoint and record.json hold it) at step ``entry["epoch"]``."""
        if self.backends:
            metrics = epoch_metrics(entry)
            self._each(lambda b: b.log(int(entry["epoch"]), metrics))

    def close(self, status: str = "complete") -> None:
        """End every tracker (the record's ``status``: MLflow and W&B mark a run that did not complete)."""
        self._each(lambda b: b.close(status))
        self.backends = {}
