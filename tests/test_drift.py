"""icp drift: which headline numbers moved against the committed summary, and whether each lies within the seeds'
spread. Known summaries in a throw-away git repository give known verdicts and exit statuses."""
import subprocess
import sys

import pandas as pd
import pytest

from icp import aggregate, drift
from tests.conftest import REPO

SUMMARY = "results/laptop/summary.csv"


def _repo(tmp_path):
    """A git repository holding the laptop's committed summary, and that summary as a frame."""
    committed = drift.committed_summary(REPO / SUMMARY)
    path = tmp_path / SUMMARY
    path.parent.mkdir(parents=True)
    committed.to_csv(path, index=False)
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    return path, aggregate.read_summary(path)


def _row(frame, variant, seed, condition="fashion-mnist/resnet20/clean"):
    dataset, model, scenario = condition.split("/")
    return frame.index[(frame["variant"] == variant) & (frame["seed"] == seed) & (frame["dataset"] == dataset)
                       & (frame["model"] == model) & (frame["scenario"] == scenario)][0]


def test_each_verdict_from_known_moves_and_the_cpus_named(tmp_path):
    path, frame = _repo(tmp_path)
    ce = list(frame.loc[[_row(frame, "ce", 0), _row(frame, "ce", 1)], "top1"])
    sd = pd.Series(ce).std(ddof=1) * 100  # in %, as the tables show it
    now = frame.copy()
    # ce: both seeds up by 0.9 sd (the mean moves by 0.9 sd: within 2 sd); ls: both by 3 of its sd (beyond)
    for seed in (0, 1):
        now.loc[_row(now, "ce", seed), "top1"] += 0.9 * sd / 100
    ls = frame.loc[[_row(frame, "ls", 0), _row(frame, "ls", 1)], "top1"]
    for seed in (0, 1):
        now.loc[_row(now, "ls", seed), "top1"] += 3 * ls.std(ddof=1)
    now["device_name"] = "Intel Xeon"
    now.to_csv(path, index=False)
    table = drift.compare(frame, now).set_index(["condition", "variant"])
    clean = "fashion-mnist/resnet20/clean"
    assert table.loc[(clean, "ce"), "verdict"] == "within the seeds' spread"
    assert table.loc[(clean, "ce"), "delta"] == pytest.approx(0.9 * sd, rel=1e-6)
    assert table.loc[(clean, "ls"), "verdict"] == "outside the seeds' spread"
    assert table.loc[(clean, "icp-adam"), "verdict"] == "unchanged"
    text, code = drift.report(path)
    assert code == 1 and "Intel Xeon" in text.splitlines()[0] and "AMD EPYC" in text.splitlines()[0]
    assert text.splitlines()[-1].startswith("verdict: 1 of ") and "clean ls" in text.splitlines()[-1]
    # only the drift within the spread: exit 0, and the verdict says so
    now.loc[[_row(now, "ls", s) for s in (0, 1)], "top1"] = ls.values
    now.to_csv(path, index=False)
    text, code = drift.report(path)
    assert code == 0 and "1 of" in text.splitlines()[-1] and "float-order drift of another CPU" in text


def test_a_variant_on_one_side_only_and_a_single_seed_are_said_so(tmp_path):
    path, frame = _repo(tmp_path)
    now = frame[~((frame["variant"] == "ls") & (frame["scenario"] == "clean"))].copy()
    one = frame[~((frame["variant"] == "icp-adam") & (frame["seed"] == 1) & (frame["scenario"] == "clean"))]
    now.loc[_row(now, "icp-adam", 0), "top1"] += 0.05
    table = drift.compare(one, now).set_index(["condition", "variant"])
    assert table.loc[("fashion-mnist/resnet20/clean", "ls"), "verdict"] == "gone"
    assert table.loc[("fashion-mnist/resnet20/clean", "icp-adam"), "verdict"] == "one seed"


def test_the_command_line_exits_with_the_verdict_and_a_missing_file_is_one_line(tmp_path):
    path, _ = _repo(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "icp", "drift", "--summary", str(path)], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "verdict: nothing moved: the same numbers as committed"
    gone = subprocess.run([sys.executable, "-m", "icp", "drift", "--summary", str(tmp_path / "none.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "dvc repro" in gone.stderr
