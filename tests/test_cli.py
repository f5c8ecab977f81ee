import argparse
import json
import re
import subprocess
import sys

import pytest
import yaml

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
    # top-1 in %, as the epoch lines and the tables show it (not 0.7270)
    assert re.search(r"complete after 2/2 epochs, test top-1 \d{1,3}\.\d\d%, \d+ img/s", second.stdout), second.stdout
    # a resumed run says from where, on stderr with the other progress lines; a fresh one says nothing of the kind
    assert "resumed from" not in first.stderr
    resumed = [ln for ln in second.stderr.splitlines() if "resumed from" in ln]
    assert len(resumed) == 1 and resumed[0].endswith(": resumed from epoch 1 of 2 (last.pt)"), second.stderr
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
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"ce", "ls"} <= set(names)
    # each line a whole first sentence: never cut where the docstring's first line wraps
    assert all(line.rstrip().endswith((".", ")", "``")) for line in lines), lines
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


def test_train_help_shows_an_example_and_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "examples:\n  # " in help_text and "--print-config" in help_text  # the epilog, kept as written
    example = next(ln.strip() for ln in help_text.splitlines() if ln.strip().startswith("icp train --config"))
    assert cli.parser().parse_args(example.split()[1:]).out  # an example that parses
    out = tmp_path / "run"
    sets = ["--set", "train.epochs=5", "--set", "method.options.steps=3", "--set", "train.epochs=7"]
    assert cli.main(["train", "--config", "config/fmnist-icp.yaml", *sets, "--print-config", "--out", str(out)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    from icp import config

    assert printed == config.load("config/fmnist-icp.yaml", ["train.epochs=7", "method.options.steps=3"]).to_dict()
    assert printed["train"]["epochs"] == 7 and printed["method"]["options"]["steps"] == 3
    assert not out.exists()  # nothing trained, nothing written
    assert cli.main(["train", "--config", "config/fmnist-ce.yaml", "--print-config"]) == 0  # no --out needed
    assert yaml.safe_load(capsys.readouterr().out)["method"]["name"] == "ce"
    assert cli.main(["train", "--config", "config/fmnist-ce.yaml"]) == 2  # training still needs --out
    assert "--out RUN_DIR is required" in capsys.readouterr().err


def test_every_line_shows_the_headline_in_the_tables_units():
    from icp import engine
    from icp.metrics import headline_text

    assert headline_text({"top1": 0.727, "nll": 0.9}) == "top-1 72.70%"
    assert headline_text({"ssim": 0.06816, "elbo": -240.0}) == "SSIM 6.82%"
    assert headline_text({"elbo": -123.456}) == "ELBO -123.46"
    assert headline_text({}) == "top-1 -"
    record = {"run_id": "a/b/clean/ce/s0"}
    entry = {"epoch": 2, "train": {"loss": 0.5}, "test": {"top1": 0.727}, "images_per_s": 100}
    assert "  test top-1 72.70%  " in engine._epoch_line(record, entry, 10, 5.0, 2)


def test_invalid_yaml_names_its_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2\n  lr: 3\n")
    proc = subprocess.run([sys.executable, "-m", "icp", "train", "--config", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"icp: error: {bad}:3:5: not valid YAML (while parsing a flow sequence expected ',' or ']', but got ':')"]


def test_an_output_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for cmd in (["train", "--config", "config/fmnist-ce.yaml", "--out", str(blocker / "run")],
                ["summarize", "--grid", "config/laptop.yaml", "--out", str(blocker / "res")]):
        proc = subprocess.run([sys.executable, "-m", "icp", *cmd], capture_output=True, text=True, cwd=REPO,
                              timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith(f"icp: error: cannot write {blocker}") and "Not a directory" in lines[0]


def test_the_launcher_tells_an_unwritable_runs_directory_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "icp.launch", "--executor", "local", "--timeout-min", "1", "--",
                           "--config", "config/fmnist-ce.yaml", "--out", str(blocker / "run"), "--run-id", "x"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(
        f"icp.launch: error: cannot write {blocker}"), proc.stderr[-2000:]


def test_every_option_of_every_command_says_what_it_does():
    subs = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"icp {name} {'/'.join(a.option_strings) or a.dest}" for name, sub in subs.choices.items()
            for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not bare, bare
