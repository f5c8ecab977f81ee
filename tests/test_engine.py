import json
import math
import os
import time

import pytest
import torch

from icp import checkpoint, config, data, engine, records
from icp.config import ConfigError
from icp.metrics import CLASSIFICATION


def test_short_run_on_real_fashion_mnist_learns(tiny_cfg, tmp_path):
    cfg = tiny_cfg("data.train_subset=2000", "data.test_subset=1000", "train.batch_size=64", "train.epochs=1",
                   "optim.lr=0.1", "schedule.name=cosine", "schedule.warmup_epochs=0.5")
    rec = engine.Trainer(cfg, tmp_path / "run").run()
    assert rec["status"] == "complete"
    assert rec["last"]["test"]["top1"] > 0.35  # chance is 0.10


def test_git_dirty_means_the_code_differs_from_its_commit_not_the_pipelines_outputs(tmp_path):
    import subprocess

    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], capture_output=True, check=True)  # noqa: E731
    git("init", "-q")
    for path in ("icp/x.py", "dvc.lock", "results/laptop/summary.csv", "figures/laptop/a.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("0\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    assert records.code_version(tmp_path)["git_dirty"] is False
    for path in ("dvc.lock", "results/laptop/summary.csv", "figures/laptop/a.png"):  # what a dvc repro rewrites
        (tmp_path / path).write_text("1\n")
    assert records.code_version(tmp_path)["git_dirty"] is False
    (tmp_path / "icp/x.py").write_text("1\n")
    assert records.code_version(tmp_path)["git_dirty"] is True


def test_record_schema(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.epochs=1", "data.val_fraction=0.2")
    rec = engine.Trainer(cfg, tmp_path / "run").run()
    on_disk = records.read(tmp_path / "run" / "record.json")
    assert on_disk == json.loads(json.dumps(rec))
    for key in ("schema", "run_id", "status", "error", "method", "model", "dataset", "scenario", "seed", "config",
                "config_digest", "code", "env", "epochs", "last", "best", "wall_time_s", "images_per_s", "resumed"):
        assert key in on_disk, key
    assert on_disk["schema"] == records.SCHEMA_VERSION and on_disk["status"] == "complete"
    assert on_disk["config"] == cfg.to_dict() and on_disk["seed"] == cfg.train.seed
    assert on_disk["code"]["version"] and on_disk["env"]["torch"] == torch.__version__
    assert on_disk["scenario"]["train_size"] == 480 and on_disk["scenario"]["val_size"] == 120
    (e,) = on_disk["epochs"]
    assert e["epoch"] == 1 and e["images_per_s"] > 0 and set(e["train"]) >= {"loss", "ce", "acc"}
    assert set(e["test"]) == set(CLASSIFICATION) and set(e["val"]) == set(CLASSIFICATION)
    assert on_disk["best"]["epoch"] == 1 and on_disk["best"]["metric"] == "val.top1"
    assert "val_clean" not in e and "val_clean" not in on_disk["last"]  # a clean cell's record as before
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "config.yaml").exists()
    assert config.load(tmp_path / "run" / "config.yaml").digest() == cfg.digest()


NOISY = ("data.val_fraction=0.2", "scenario.kind=noisy", "scenario.noise_rate=0.4")


def test_a_noisy_run_records_its_noisy_validation_and_the_clean_oracle_beside_it(tiny_cfg, tmp_path):
    """Every evaluated epoch carries val (the noisy validation labels) and val_clean (the same images' clean labels),
    both scored on the model's own predictions; last and best carry both."""
    trainer = engine.Trainer(tiny_cfg("train.epochs=2", *NOISY), tmp_path / "run")
    rec = trainer.run()
    assert rec == json.loads(json.dumps(records.read(tmp_path / "run" / "record.json")))
    for e in rec["epochs"]:
        assert set(e["val"]) == set(CLASSIFICATION) and set(e["val_clean"]) == set(CLASSIFICATION)
    assert set(rec["last"]) >= {"val", "val_clean"} and set(rec["best"]) >= {"val", "val_clean"}
    assert rec["scenario"]["val_noisy_count"] == round(0.4 * 120)
    splits = trainer.splits
    model = trainer.method.eval_model().eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in trainer.val_loader]).numpy()
    noisy, clean = (pred == splits.val.labels).mean(), (pred == splits.val_clean_labels).mean()
    assert rec["last"]["val"]["top1"] == pytest.approx(noisy, abs=1e-6)
    assert rec["last"]["val_clean"]["top1"] == pytest.approx(clean, abs=1e-6)
    assert noisy != clean


def test_the_best_epoch_is_chosen_on_the_noisy_validation_never_on_the_oracle(tiny_cfg, tmp_path, monkeypatch):
    """Noisy validation top-1 peaks at epoch 2, the clean oracle's at epoch 1: best (and best.pt) is epoch 2."""
    real = engine.Trainer.evaluate_val
    script = iter([(0.30, 0.90), (0.50, 0.20), (0.40, 0.10)])

    def scripted(self):
        val, oracle = real(self)
        v, c = next(script)
        return {**val, "top1": v}, {**oracle, "top1": c}

    monkeypatch.setattr(engine.Trainer, "evaluate_val", scripted)
    rec = engine.Trainer(tiny_cfg("train.epochs=3", *NOISY), tmp_path / "run").run()
    assert [e["val_clean"]["top1"] for e in rec["epochs"]] == [0.90, 0.20, 0.10]
    assert rec["best"]["epoch"] == 2 and rec["best"]["metric"] == "val.top1"
    assert rec["best"]["val"]["top1"] == 0.50 and rec["best"]["val_clean"]["top1"] == 0.20
    assert checkpoint.load(tmp_path / "run" / "best.pt")["epoch"] == 2


def test_throughput_is_total_images_over_total_time_and_env_names_the_machine(tiny_cfg, tmp_path):
    rec = engine.Trainer(tiny_cfg("train.epochs=2"), tmp_path / "run").run()
    eps = rec["epochs"]
    assert [e["images"] for e in eps] == [600, 600]
    # a mean of the epochs' rates would let a fast epoch (ICP's warm-up) inflate the run's speed
    assert rec["images_per_s"] == pytest.approx(1200 / (eps[0]["time_s"] + eps[1]["time_s"]), rel=1e-9)
    assert records.throughput([{"images": 1000, "time_s": 1.0}, {"images": 1000, "time_s": 3.0}]) == 500.0
    env = rec["env"]
    assert env["device_name"] == env["cpu"] == records.cpu_model() and env["device_name"] != "cpu"
    assert env["cpu_threads"] == torch.get_num_threads() and env["cpu_capability"]


def test_compute_counts_every_attempt_and_a_shared_device_by_its_share(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.epochs=2")
    assert engine.Trainer(cfg, tmp_path / "run").run(max_epochs=1)["status"] == "running"
    real_epoch = engine.Trainer.train_epoch

    spent = []

    def epoch_then_disk_full(self, epoch):
        t0 = time.perf_counter()
        real_epoch(self, epoch)  # the epoch's work is done, then lost: no checkpoint follows
        spent.append(time.perf_counter() - t0)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.Trainer, "train_epoch", epoch_then_disk_full)
    with pytest.raises(OSError):
        engine.Trainer(cfg, tmp_path / "run").run()
    failed = records.read(tmp_path / "run" / "record.json")
    lost = failed["jobs"][1]["seconds"]
    assert failed["status"] == "failed" and lost >= spent[0]  # it trained a whole epoch
    assert len(failed["epochs"]) == 1  # the lost epoch is not claimed: last.pt does not hold it
    monkeypatch.undo()
    monkeypatch.setenv("ICP_DEVICE_SHARED_BY", "2")  # the last attempt shares its device with another run
    rec = engine.Trainer(cfg, tmp_path / "run").run()
    assert rec["status"] == "complete" and [j["shared_by"] for j in rec["jobs"]] == [1, 1, 2]
    first, second, third = (j["seconds"] for j in rec["jobs"])
    assert second == lost and min(first, third) > 0
    # the failed attempt's epoch is paid for, though no kept epoch holds it
    assert rec["compute_s"] == pytest.approx(first + second + third / 2, rel=1e-9)


def _weights(run_dir):
    return checkpoint.load(run_dir / "last.pt")["method"]


def test_resume_reproduces_uninterrupted_run_exactly(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.epochs=3", "data.val_fraction=0.2", "method.name=ls", "train.grad_clip=5")
    full = engine.Trainer(cfg, tmp_path / "full").run()
    part = engine.Trainer(cfg, tmp_path / "part").run(max_epochs=1)
    assert part["status"] == "running" and len(part["epochs"]) == 1
    part = engine.Trainer(cfg, tmp_path / "part").run(max_epochs=1)  # a second, separate interruption
    resumed = engine.Trainer(cfg, tmp_path / "part").run()
    assert resumed["resumed"] == 2 and resumed["status"] == "complete"
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in eps]
    assert strip(resumed["epochs"]) == strip(full["epochs"])
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_completed_run_is_not_trained_again(tiny_cfg, tmp_path):
    """Run again, a complete run trains nothing; with its record.json removed (Snakemake removes a job's output before
    it runs the job, as after a kill that came between the run's end and Snakemake noticing it) the record comes back
    from last.pt byte for byte as the run ended it: its compute seconds and time stamp included."""
    cfg = tiny_cfg("train.epochs=1")
    first = engine.Trainer(cfg, tmp_path / "run").run()
    mtime = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    written = (tmp_path / "run" / "record.json").read_bytes()
    again = engine.Trainer(cfg, tmp_path / "run").run()
    assert again["epochs"] == first["epochs"] and (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime
    (tmp_path / "run" / "record.json").unlink()
    time.sleep(1.1)  # a time stamp written now would differ from the run's (its resolution is one second)
    engine.Trainer(cfg, tmp_path / "run").run()
    assert (tmp_path / "run" / "record.json").read_bytes() == written
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == mtime


def test_other_config_in_run_dir_is_refused(tiny_cfg, tmp_path):
    engine.Trainer(tiny_cfg("train.epochs=1"), tmp_path / "run").run()
    with pytest.raises(ConfigError, match=r"holds a run of another config \(train.seed: 0 there, 9 here\)"):
        engine.Trainer(tiny_cfg("train.epochs=1", "train.seed=9"), tmp_path / "run").run()


def test_interrupted_checkpoint_write_keeps_previous(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.epochs=2")
    engine.Trainer(cfg, tmp_path / "run").run(max_epochs=1)
    before = checkpoint.load(tmp_path / "run" / "last.pt")

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        engine.Trainer(cfg, tmp_path / "run").run()
    monkeypatch.undo()
    after = checkpoint.load(tmp_path / "run" / "last.pt")
    assert after["epoch"] == before["epoch"] == 1
    assert all(torch.equal(after["method"][k], before["method"][k]) for k in before["method"])
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp file left
    rec = records.read(tmp_path / "run" / "record.json")
    assert rec["status"] == "failed" and rec["error"] == "OSError: disk full"
    # and the run resumes from the intact checkpoint
    assert engine.Trainer(cfg, tmp_path / "run").run()["status"] == "complete"


def test_a_full_disk_names_the_path_and_the_record_never_runs_ahead_of_its_checkpoint(tiny_cfg, tmp_path,
                                                                                      monkeypatch):
    cfg = tiny_cfg("train.epochs=3")
    real_fsync, calls = os.fsync, []

    def full_at_second_checkpoint(fd):  # a write that the disk refuses, as a full disk does: errno, no file name
        if ".last.pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):  # every atomic write syncs: count the checkpoint's
            calls.append(fd)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_second_checkpoint)
    with pytest.raises(OSError, match="No space left on device"):
        engine.Trainer(cfg, tmp_path / "run").run()
    monkeypatch.undo()
    rec = records.read(tmp_path / "run" / "record.json")
    assert rec["error"] == f"OSError: [Errno 28] No space left on device: '{tmp_path / 'run' / 'last.pt'}'"
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == len(rec["epochs"]) == 1
    assert rec["last"]["epoch"] == 1 and rec["wall_time_s"] > 0
    resumed = engine.Trainer(cfg, tmp_path / "run").run()
    assert resumed["status"] == "complete" and [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]


def test_the_record_names_the_folder_the_data_was_read_from(tiny_cfg, tmp_path, fmnist_root):
    # the tests' data root holds no copy: Fashion-MNIST is read from Debian's package, and the record says so
    rec = engine.Trainer(tiny_cfg("train.epochs=1"), tmp_path / "run").run(max_epochs=1)
    assert rec["config"]["data"]["root"] == str(fmnist_root)
    assert rec["scenario"]["data_source"] == str(data._find_fashion_mnist(fmnist_root)) != str(fmnist_root)
    own = tmp_path / "root" / "FashionMNIST" / "raw"  # a root with its own copy is read from there
    own.parent.mkdir(parents=True)
    own.symlink_to(data._find_fashion_mnist(fmnist_root))
    rec = engine.Trainer(tiny_cfg("train.epochs=1", f"data.root={tmp_path / 'root'}"), tmp_path / "r2").run(
        max_epochs=1)
    assert rec["scenario"]["data_source"] == str(own)


def test_bad_config_or_missing_data_writes_nothing(tiny_cfg, tmp_path):
    with pytest.raises(Exception):
        engine.Trainer(tiny_cfg("data.dataset=cifar10"), tmp_path / "run").run()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, expect", [
    ("multistep", {0: 1.0, 9: 1.0, 10: 0.1, 14: 0.1, 15: 0.01, 19: 0.01}),
    ("cosine", {0: 1.0, 10: 0.5, 20: 0.0}),
    ("constant", {0: 1.0, 19: 1.0}),
])
def test_lr_schedules(name, expect):
    cfg = config.resolve({}, [f"schedule.name={name}", "train.epochs=20"])
    for epoch, factor in expect.items():
        assert engine.lr_factor(cfg, epoch * 100, 100) == pytest.approx(factor, abs=1e-9)


def test_warmup_is_linear_per_iteration():
    cfg = config.resolve({}, ["schedule.name=constant", "schedule.warmup_epochs=2", "train.epochs=10"])
    assert engine.lr_factor(cfg, 0, 50) == pytest.approx(1 / 100)
    assert engine.lr_factor(cfg, 49, 50) == pytest.approx(0.5)
    assert engine.lr_factor(cfg, 150, 50) == 1.0


def test_optimizers(tiny_cfg):
    m = torch.nn.Linear(2, 2)
    sgd = engine.build_optimizer(config.resolve({}, ["optim.nesterov=true"]), m.parameters(), torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    adamw = engine.build_optimizer(config.resolve({}, ["optim.name=adamw", "optim.lr=1e-3"]), m.parameters(),
                                   torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW) and math.isclose(adamw.defaults["lr"], 1e-3)


def test_eval_every_evaluates_every_nth_epoch_and_the_last_and_trains_the_same(tiny_cfg, tmp_path):
    sets = ("train.epochs=3", "data.train_subset=200", "data.test_subset=100")
    every = engine.Trainer(tiny_cfg(*sets, "train.eval_every=2"), tmp_path / "every").run()
    full = engine.Trainer(tiny_cfg(*sets), tmp_path / "full").run()
    assert [e["test"] is not None for e in every["epochs"]] == [False, True, True]  # epoch 2, and the last
    assert every["last"] == full["last"] and every["status"] == "complete"  # evaluation changes no training
    assert [e["train"] for e in every["epochs"]] == [e["train"] for e in full["epochs"]]
    assert tiny_cfg(*sets).digest() == tiny_cfg(*sets, "train.eval_every=null").digest()  # runs before the key


def test_a_stop_after_the_final_record_leaves_the_run_complete(tiny_cfg, tmp_path, monkeypatch):
    """A termination signal that lands after record.json says complete (here: while the trainer logs its last
    epoch) ends the process but not the run: the record stays complete, so the launcher keeps it (a CI failure: the
    record was rewritten 'interrupted', set aside, and a finished tuning trial was lost)."""
    from icp import engine, records, trackers

    def stop(self, entry):
        raise KeyboardInterrupt

    monkeypatch.setattr(trackers.Trackers, "log_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        engine.Trainer(tiny_cfg("train.epochs=1"), tmp_path / "run").run()
    rec = records.read(tmp_path / "run" / records.NAME)
    assert rec["status"] == "complete" and rec["error"] is None and len(rec["epochs"]) == 1
