"""train.loggers (icp.trackers): what TensorBoard, MLflow and W&B (offline) hold of a run, read back with each tool's
own reader, equals the record; a resumed run logs every epoch once; a tracker that fails never fails the run."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

from icp import config, engine, trackers
from tests.conftest import REPO

LOGGERS = ["tensorboard", "mlflow"] + (["wandb"] if "wandb" in config.LOGGERS else [])
pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
if "wandb" in LOGGERS:
    pytest.importorskip("wandb")


def _expected(entry: dict) -> dict[str, float]:
    """The numbers of a record's epoch entry under the names the trackers use (written out, not icp's flattening)."""
    out = {f"{section}/{k}": v for section in ("train", "diagnostics", "test", "val")
           for k, v in (entry[section] or {}).items() if v is not None}
    return {**out, **{k: entry[k] for k in ("lr", "time_s", "images", "images_per_s")}}


def _tb_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def _tb_raw_steps(run_dir) -> list[tuple[str, int]]:
    """(tag, step) of every scalar event in every event file, as written (no reader's purge)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            out += [(v.tag, event.step) for v in event.summary.value if not v.tag.endswith("text_summary")]
    return out


def _mlflow(run_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("icp")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _wandb_records(run_dir) -> list:
    """The records of every offline W&B run in ``run_dir/wandb``: the .wandb files are LevelDB logs (32 KiB blocks,
    each record a 7-byte header: crc, length, type) behind a 7-byte W&B header; each record a protobuf Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        blob, pos, chunks = path.read_bytes(), 7, b""
        assert blob[:4] == b":W&B"
        while pos + 7 <= len(blob):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", blob[pos:pos + 7])
            if kind == 0 and length == 0:
                break
            chunks += blob[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # FULL or LAST
                rec = pb.Record()
                rec.ParseFromString(chunks)
                out.append((path.parent.name, rec))
                chunks = b""
    return out


def _wandb_history(run_dir) -> list[tuple[int, dict]]:
    return [(rec.history.step.num, {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                    for i in rec.history.item if not (i.key or i.nested_key[0]).startswith("_")})
            for _, rec in _wandb_records(run_dir) if rec.WhichOneof("record_type") == "history"]


@pytest.fixture(scope="module")
def tracked(fmnist_root, tmp_path_factory):
    """A two-epoch run with every tracker; (run_dir, record, resolved config)."""
    from tests.conftest import TINY

    cfg = config.resolve({}, [f"data.root={fmnist_root}", *TINY, "train.epochs=2",
                              f"train.loggers=[{','.join(LOGGERS)}]"])
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    record = engine.Trainer(cfg, run_dir).run()
    assert record["status"] == "complete" and len(record["epochs"]) == 2
    return run_dir, record, cfg


def test_tensorboard_holds_the_records_epoch_metrics(tracked):
    run_dir, record, _ = tracked
    scalars, acc = _tb_scalars(run_dir)
    expected = [_expected(e) for e in record["epochs"]]
    assert set(scalars) == set(expected[0]) | set(expected[1])
    for tag, events in scalars.items():
        want = [(e["epoch"], x[tag]) for e, x in zip(record["epochs"], expected) if tag in x]
        assert [s for s, _ in events] == [s for s, _ in want], tag
        assert [v for _, v in events] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-7), tag
    text = lambda tag: acc.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text("run_id") == record["run_id"]
    rows = dict(line.strip("|").split(" | ", 1) for line in text("config").splitlines()[2:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["train.epochs"] == "2" and rows["data.root"] == record["config"]["data"]["root"]
    assert rows["train.loggers"] == json.dumps(LOGGERS) and rows["schedule.milestones"] == "[0.5, 0.75]"


def test_mlflow_holds_the_records_epoch_metrics_run_id_and_config(tracked, monkeypatch):
    run_dir, record, cfg = tracked
    client, run = _mlflow(run_dir, monkeypatch)
    assert run.info.run_name == record["run_id"] and run.data.tags["icp.run_id"] == record["run_id"]
    assert run.info.status == "FINISHED"
    expected = [_expected(e) for e in record["epochs"]]
    assert set(run.data.metrics) == set(expected[0]) | set(expected[1])
    for key in run.data.metrics:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        want = [(e["epoch"], x[key]) for e, x in zip(record["epochs"], expected) if key in x]
        assert [s for s, _ in history] == [s for s, _ in want], key
        assert [v for _, v in history] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-7), key
    params = run.data.params
    assert params["train.epochs"] == "2" and params["method.name"] == record["method"] == cfg.method.name
    assert params["optim.lr"] == str(cfg.optim.lr) and params["data.train_subset"] == "600"
    assert params["train.grad_clip"] == "null" and params["train.loggers"] == json.dumps(LOGGERS)
    assert len(params) == len(trackers.flat_config(record["config"]))


@pytest.mark.skipif("wandb" not in LOGGERS, reason="wandb is not an accepted logger")
def test_wandb_offline_run_holds_the_records_epoch_metrics_run_id_and_config(tracked):
    run_dir, record, _ = tracked
    records = _wandb_records(run_dir)
    runs = [rec.run for _, rec in records if rec.WhichOneof("record_type") == "run"]
    assert runs and runs[0].display_name == record["run_id"]
    cfg = {u.key: json.loads(u.value_json) for r in runs[:1] for u in r.config.update}
    assert cfg["train.epochs"] == "2" and cfg["method.name"] == record["method"]
    history = _wandb_history(run_dir)
    assert [s for s, _ in history] == [1, 2]
    for (step, values), entry in zip(history, record["epochs"]):
        assert values == pytest.approx(_expected(entry), rel=1e-6, abs=1e-7)
    assert not list(run_dir.glob("../*wandb*")) and (run_dir / "wandb" / ".cache").is_dir()  # all inside the run


def test_a_resumed_run_logs_each_epoch_once_at_its_step(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.epochs=2", f"train.loggers=[{','.join(LOGGERS)}]")
    run_dir = tmp_path / "run"
    assert engine.Trainer(cfg, run_dir).run(max_epochs=1)["status"] == "running"
    record = engine.Trainer(cfg, run_dir).run()
    assert record["status"] == "complete" and record["resumed"] == 1
    expected = {e["epoch"]: _expected(e) for e in record["epochs"]}

    raw = _tb_raw_steps(run_dir)
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file an attempt
    assert sorted(raw) == sorted((tag, step) for step, x in expected.items() for tag in x)  # none twice
    scalars, acc = _tb_scalars(run_dir)
    assert scalars["train/loss"] == [(s, pytest.approx(expected[s]["train/loss"], rel=1e-6)) for s in (1, 2)]
    assert len(acc.Tensors("run_id/text_summary")) == 1

    client, run = _mlflow(run_dir, monkeypatch)  # one MLflow run, both epochs
    for key in ("train/loss", "test/top1", "lr"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(s, pytest.approx(expected[s][key], rel=1e-6)) for s in (1, 2)], key
    assert run.info.status == "FINISHED"

    if "wandb" in LOGGERS:  # two offline runs of the same id: epoch 1, then epoch 2
        assert [s for s, _ in _wandb_history(run_dir)] == [1, 2]
        assert len({name for name, _ in _wandb_records(run_dir)}) == 2


def test_a_failing_or_missing_tracker_warns_once_and_the_run_completes(tiny_cfg, tmp_path, monkeypatch, capsys):
    class Broken:
        def __init__(self, *args):
            pass

        def log(self, step, metrics):
            raise OSError("disk full\nsecond line")

        def close(self, status):
            raise AssertionError("a dropped tracker is not closed")

    monkeypatch.setitem(trackers._BACKENDS, "tensorboard", Broken)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    cfg = tiny_cfg("train.epochs=2", "train.loggers=[tensorboard, mlflow]")
    record = engine.Trainer(cfg, tmp_path / "run").run()
    assert record["status"] == "complete" and len(record["epochs"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "tracker" in line]
    assert len(lines) == 2, lines  # each once, though the broken one failed at every epoch
    tb, mlf = sorted(lines, key=lambda line: "mlflow" in line)
    assert "tracker tensorboard dropped (OSError: disk full); training goes on" in tb
    assert "tracker mlflow dropped" in mlf and "pip install mlflow-skinny" in mlf
    assert not (tmp_path / "run" / "mlruns").exists()


def test_unknown_logger_is_refused_in_one_line_naming_the_accepted_ones():
    with pytest.raises(config.ConfigError) as exc:
        config.resolve({}, ["train.loggers=[tensorbord]"])
    msg = str(exc.value)
    assert "\n" not in msg and "train.loggers" in msg and "did you mean 'tensorboard'?" in msg
    assert all(name in msg for name in config.LOGGERS)
    with pytest.raises(config.ConfigError, match=r"unknown logger 'comet' \(accepted: tensorboard, mlflow"):
        config.resolve({}, ["train.loggers=[comet]"])
    with pytest.raises(config.ConfigError, match="listed twice"):
        config.resolve({}, ["train.loggers=[mlflow, mlflow]"])
    with pytest.raises(config.ConfigError, match="train.loggers: expected a list"):
        config.resolve({}, ["train.loggers=tensorboard"])


def test_loggers_default_to_none_and_leave_the_digest_alone():
    default = config.resolve({})
    assert default.train.loggers == []
    assert config.resolve({}, ["train.loggers=[tensorboard, mlflow]"]).digest() == default.digest()
    assert "loggers" in config.RESULT_NEUTRAL_KEYS  # a run may be resumed with other trackers


def test_no_tracker_configured_imports_no_tracker_library():
    code = ("import sys; from icp import config, engine, trackers\n"
            "t = trackers.Trackers('/nonexistent'); t.start(config.resolve({}), {'run_id': 'x'}, 0)\n"
            "t.log_epoch({'epoch': 1, 'train': {'loss': 1.0}}); t.close()\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'mlflow', 'wandb')]\n"
            "bad += [m for m in sys.modules if m.startswith('torch.utils.tensorboard')]\n"
            "assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
