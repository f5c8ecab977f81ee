"""The grid's MLflow store (icp.tracker_store), read back with MLflow's own client: one MLflow run per record, its
config as params and its epochs as metric histories; a second sync logs nothing, a resumed run only its new epochs."""
import json
import os

import pytest

pytest.importorskip("mlflow")

from icp import tracker_store  # noqa: E402
from tests.test_aggregate import expand, record, write_records  # noqa: E402


def _client(store):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.resolve().as_uri())


def _runs(store, experiment="grid"):
    client = _client(store)
    exp = client.get_experiment_by_name(experiment)
    return client, {r.data.tags["icp.run_id"]: r for r in client.search_runs([exp.experiment_id])}


def test_every_record_is_an_mlflow_run_with_its_config_and_epochs_and_a_second_sync_logs_nothing(tmp_path):
    g = expand(tmp_path, ["ce", "ls"], seeds=(0, 1))
    write_records(g, lambda run: {**record(run, 0.8 + 0.01 * run.seed), "config_digest": "d0"}
                  if run.seed == 0 or run.method == "ce" else None)  # ls/s1 has no record: not in the store
    store = tmp_path / "results" / "mlruns"
    first = tracker_store.sync_grid(g, tmp_path / "results")
    assert first.store == store and (first.runs, first.created) == (3, 3)
    client, runs = _runs(store)
    assert set(runs) == {"fashion-mnist/resnet20/clean/ce/s0", "fashion-mnist/resnet20/clean/ce/s1",
                         "fashion-mnist/resnet20/clean/ls/s0"}
    run = runs["fashion-mnist/resnet20/clean/ce/s1"]
    assert run.info.run_name == "fashion-mnist/resnet20/clean/ce/s1" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["seed"] == "1"
    assert run.data.params["method.name"] == "ce" and run.data.tags["icp.studies"] == "main"
    history = client.get_metric_history(run.info.run_id, "test/top1")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.71), (2, 0.81)]
    assert run.data.metrics["final/test/top1"] == pytest.approx(0.81)
    again = tracker_store.sync_grid(g, tmp_path / "results")
    assert (again.runs, again.created, again.metrics) == (3, 0, 0)
    assert len(_runs(store)[1]) == 3


def test_a_run_in_flight_logs_its_new_epochs_once_and_another_config_replaces_its_run(tmp_path):
    g = expand(tmp_path, ["ce"], seeds=(0,))
    (run,) = g.runs.values()
    full = {**record(run, 0.8), "config_digest": "d0"}
    partial = {**full, "status": "running", "epochs": full["epochs"][:1], "last": None}
    write_records(g, lambda r: partial)
    tracker_store.sync_grid(g, tmp_path)
    client, runs = _runs(tmp_path / "mlruns")
    assert runs[run.run_id].info.status == "RUNNING"
    path = os.path.join(run.run_dir, "record.json")
    with open(path, "w") as f:
        json.dump(full, f)
    resumed = tracker_store.sync_grid(g, tmp_path)
    assert resumed.created == 0
    client, runs = _runs(tmp_path / "mlruns")
    mlrun = runs[run.run_id]
    assert mlrun.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "test/top1")] == [1, 2]
    with open(path, "w") as f:
        json.dump({**full, "config_digest": "d1"}, f)
    assert tracker_store.sync_grid(g, tmp_path).created == 1
    assert len(_runs(tmp_path / "mlruns")[1]) == 1  # the old config's run deleted


def test_no_store_where_it_is_turned_off(tmp_path, monkeypatch):
    g = expand(tmp_path, ["ce"], seeds=(0,))
    write_records(g, lambda r: record(r, 0.8))
    monkeypatch.setenv("ICP_TRACKER_STORE", "0")
    assert tracker_store.sync_grid(g, tmp_path) is None and not (tmp_path / "mlruns").exists()
