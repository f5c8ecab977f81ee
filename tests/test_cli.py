import json
import subprocess
import sys

import pytest

from icp import cli
from tests.conftest import REPO, TINY


def _icp(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "icp", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_train_then_resume_via_cli(fmnist_root, tmp_path):
    out = tmp_path / "run"
    sets = [a for s in [f"data.root={fmnist_root}", *TINY] for a in ("--set", s)]
    first = _icp("train", "--config", "config/fmnist-ce.yaml", *sets, "--out", str(out), "--max-epochs", "1")
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "record.json").read_text())["status"] == "running"
    second = _icp("train", "--config", "config/fmnist-ce.yaml", *sets, "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "complete after 2/2 epochs" in second.stdout
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete" and rec["resumed"] == 1 and [e["epoch"] for e in rec["epochs"]] == [1, 2]


@pytest.mark.parametrize("args, message", [
    (["--set", "train.epoch=2"], "icp: error: unknown key 'train.epoch'; did you mean 'epochs'?"),
    (["--config", "nope.yaml"], "icp: error: config file not found: nope.yaml"),
    (["--set", "data.dataset=cifar100", "--set", "data.root=/nonexistent"], "icp: error: cifar100 not found"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, args, message, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()


def test_listings(capsys):
    assert cli.main(["methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"ce", "ls"} <= set(names)
    assert cli.main(["models"]) == 0
    assert "resnet20" in capsys.readouterr().out


def test_bench_prints_ratio_table(fmnist_root, capsys):
    assert cli.main(["bench", "--device", "cpu", "--methods", "ce", "ls", "--batch-size", "32", "--steps", "2",
                     "--warmup", "1", "--rounds", "2", "--set", f"data.root={fmnist_root}"]) == 0
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if "speed_vs_baseline" in line.split()]
    assert header and "img_per_s" in header[0]
    rows = [line.split() for line in out.splitlines() if line.split()[:2] in (["resnet20", "ce"], ["resnet20", "ls"])
            and "fashion-mnist" in line]
    assert len(rows) == 2 and float(rows[0][-1]) == 1.0 and float(rows[1][-1]) > 0
