"""One MLflow store per grid: every run of a sweep as an MLflow run, so that a browser compares them side by side.

``<results_dir>/mlruns`` (beside the grid's ``summary.csv``; ``results/laptop/mlruns`` for the laptop) is a local
MLflow file store with one experiment named by the grid file (``laptop``, ``paper``). Each run of the grid that has
a record, tuning trials and finals included, is one MLflow run:

* named by its run id and tagged ``icp.run_id``, ``icp.variant``, ``icp.studies``, ``icp.status``,
  ``icp.config_digest``, ``icp.git_commit``;
* its params: the resolved config flattened (``optim.lr``, ``method.options.alpha``: :func:`icp.trackers.flat_config`)
  and ``seed``, so MLflow's table and parallel-coordinates view put a tuning study's trials side by side;
* its metrics: every number of every epoch of the record at step = epoch (:func:`icp.trackers.epoch_metrics`:
  ``test/top1``, ``val/top1``, ``train/loss``, ...), plus ``final/...`` of the record's ``last`` block.

The store is built from the records, which stay the one source of truth: :func:`sync` logs what a record holds
that the store does not (the epochs after the last one logged, the status), so it can run again at any time, during
a sweep or after, and a second call logs nothing. A run trained again with another config (another digest) replaces
its MLflow run. ``icp summarize`` syncs the store after it writes the summary, and ``icp status --watch`` on
every refresh; ``--no-store`` (or ``ICP_TRACKER_STORE=0``) turns it off, and where MLflow is not installed there is
no store and no error. ``mlflow ui --backend-store-uri file://$PWD/results/laptop/mlruns`` shows it (the UI is in
the full ``mlflow`` package; MLflow 3 opens a file store only with ``MLFLOW_ALLOW_FILE_STORE=true``).
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from icp import records
from icp.trackers import epoch_metrics, flat_config

# the record's statuses as MLflow's run statuses (a run in flight is RUNNING)
STATUS = {"complete": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "interrupted": "KILLED",
          "requeued": "SCHEDULED", "running": "RUNNING"}
PARAM_LIMIT = 500  # characters of a param value: the shortest limit of MLflow's versions


class Synced(NamedTuple):
    store: Path
    runs: int  # MLflow runs in the store for this grid's records
    created: int  # of which created by this call
    metrics: int  # metric values logged by this call


def enabled() -> bool:
    """Whether a store is written: MLflow is installed and ``ICP_TRACKER_STORE`` is not ``0``."""
    return os.environ.get("ICP_TRACKER_STORE", "1") != "0" and importlib.util.find_spec("mlflow") is not None


def store_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / "mlruns"


def _client(store: Path):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file stores only when asked for
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reports
    from mlflow.tracking import MlflowClient

    store.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=store.resolve().as_uri())


def sync(runs: Iterable[tuple[str, Path, str, tuple[str, ...]]], store: Path, experiment: str) -> Synced:
    """Bring ``store`` up to date with the records of ``runs`` ((run id, run directory, variant, studies) each); runs
    without a record are skipped. Returns what the store holds and what this call added."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(store)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    known = {r.data.tags.get("icp.run_id"): r for r in _all_runs(client, exp_id)}
    created = logged = held = 0
    for run_id, run_dir, variant, studies in runs:
        rec = records.load(run_dir).record
        if rec is None:
            continue
        held += 1
        old = known.get(run_id)
        if old is not None and old.data.tags.get("icp.config_digest") != rec.get("config_digest"):
            client.delete_run(old.info.run_id)  # another config trained under this id: its history is not this run's
            old = None
        tags = {"icp.run_id": run_id, "icp.variant": variant, "icp.studies": ",".join(studies),
                "icp.status": rec["status"], "icp.config_digest": str(rec.get("config_digest")),
                "icp.git_commit": str((rec.get("code") or {}).get("git_commit"))}
        if old is None:
            mlrun = client.create_run(exp_id, run_name=run_id, tags=tags).info.run_id
            params = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in
                      {**flat_config(rec.get("config") or {}), "seed": str(rec.get("seed"))}.items()]
            for i in range(0, len(params), 100):  # at most 100 params a batch
                client.log_batch(mlrun, params=params[i:i + 100])
            done, created = 0, created + 1
        else:
            mlrun = old.info.run_id
            done = int(old.data.tags.get("icp.epochs_logged", 0))
            client.log_batch(mlrun, tags=[RunTag(k, v) for k, v in tags.items() if old.data.tags.get(k) != v])
        epochs = rec.get("epochs") or []
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(e["epoch"])) for e in epochs[done:] for k, v in epoch_metrics(e).items()]
        if rec["status"] == "complete" and done < len(epochs) or (old is None and rec["status"] == "complete"):
            last = rec.get("last") or {}
            batch += [Metric(f"final/{k}", v, now, int(last.get("epoch") or len(epochs)))
                      for k, v in epoch_metrics({k: last.get(k) for k in ("test", "val", "val_clean")}).items()]
        for i in range(0, len(batch), 1000):  # MLflow's batch limit
            client.log_batch(mlrun, metrics=batch[i:i + 1000])
        logged += len(batch)
        if old is None or done != len(epochs):
            client.set_tag(mlrun, "icp.epochs_logged", str(len(epochs)))
        status = STATUS.get(rec["status"], "KILLED")
        if old is None or old.info.status != status:
            if status in ("RUNNING", "SCHEDULED"):
                client.update_run(mlrun, status=status)
            else:
                client.set_terminated(mlrun, status=status)
    return Synced(store, held, created, logged)


def _all_runs(client, exp_id: str) -> list:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def sync_grid(g, results_dir: Optional[str | Path] = None, runs_dir: Optional[str | Path] = None) -> Optional[Synced]:
    """:func:`sync` for an expanded grid (:class:`icp.grid.Grid`, with its tuned cells' finals where selected):
    every run with a record (under ``runs_dir``, default the grid's) into ``<results_dir>/mlruns``, the experiment
    named by the grid file; None where the store is off (:func:`enabled`)."""
    if not enabled():
        return None
    runs = [(rid, Path(runs_dir) / rid if runs_dir else Path(run.run_dir), run.variant, tuple(run.studies))
            for rid, run in g.runs.items()]
    return sync(runs, store_path(results_dir or g.results_dir), Path(g.source or "grid").stem)


def ui_command(store: Path) -> str:
    return f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store.resolve().as_uri()}"
