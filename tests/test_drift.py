"""icp drift: which headline numbers moved against the committed summary, and whether each lies within the seeds'
spread. Known summaries in a throw-away git repository give known verdicts and exit statuses."""
import subprocess
import sys

import pandas as pd
import pytest

from icp import drift
from icp.results import frames
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
    return path, frames.read_summary(path)


def _row(frame, variant, seed, condition="fashion-mnist/resnet20/clean"):
    dataset, model, scenario = condition.split("/")
    return frame.index[(frame["variant"] == variant) & (frame["seed"] == seed) & (frame["dataset"] == dataset)
                       & (frame["model"] == model) & (frame["scenario"] == scenario)][0]


def test_the_seed_spread_is_pooled_over_variants():
    values = pd.DataFrame({"dataset": "d", "model": "m", "scenario": "s", "metric": "top1",
                           "variant": ["a", "a", "b", "b", "b", "c"], "seed": [0, 1, 0, 1, 2, 0],
                           "value": [1.0, 3.0, 0.0, 2.0, 4.0, 9.0]})
    # a: var 2 (1 dof), b: var 4 (2 dof), c: one seed (no dof) -> sqrt((2 + 8) / 3)
    assert drift.pooled_sd(values)["top1"] == pytest.approx((10 / 3) ** 0.5)


def test_each_verdict_from_known_moves_and_the_cpus_named(tmp_path):
    path, frame = _repo(tmp_path)
    sigma = drift.pooled_sd(drift.headline_values(frame))["top1"]  # in %, as the tables show it
    bound = 2 * sigma * (1 / 2 + 1 / 2) ** 0.5  # two seeds on each side
    now = frame.copy()
    # ce: both seeds up by half the bound (within); ls: both by 1.5 bounds (beyond); icp-adam untouched
    for seed in (0, 1):
        now.loc[_row(now, "ce", seed), "top1"] += 0.5 * bound / 100
        now.loc[_row(now, "ls", seed), "top1"] += 1.5 * bound / 100
    committed_cpu = str(frame["device_name"].iloc[0])  # the CPU the committed summary names
    now["device_name"], now["cpu_capability"] = "Some Other CPU", "avx2"
    now.to_csv(path, index=False)
    table = drift.compare(frame, now).set_index(["condition", "variant"])
    clean = "fashion-mnist/resnet20/clean"
    assert table.loc[(clean, "ce"), "verdict"] == "within the seeds' spread"
    assert table.loc[(clean, "ce"), "delta"] == pytest.approx(0.5 * bound, rel=1e-6)
    assert table.loc[(clean, "ce"), "bound"] == pytest.approx(bound)
    assert table.loc[(clean, "ls"), "verdict"] == "outside the seeds' spread"
    assert table.loc[(clean, "icp-adam"), "verdict"] == "unchanged"
    text, code = drift.report(path)
    first = text.splitlines()[0]
    assert code == 1 and "Some Other CPU (avx2 kernels)" in first and committed_cpu in first
    assert text.splitlines()[-1].startswith("verdict: 1 of ") and "clean ls" in text.splitlines()[-1]
    # only the drift within the spread: exit 0, and the verdict says so
    for seed in (0, 1):
        now.loc[_row(now, "ls", seed), "top1"] = frame.loc[_row(frame, "ls", seed), "top1"]
    now.to_csv(path, index=False)
    text, code = drift.report(path)
    assert code == 0 and "1 of" in text.splitlines()[-1] and "float-order drift of another CPU or other kernels" in text


def test_a_variant_on_one_side_only_a_single_seed_and_no_spread_at_all_are_said_so(tmp_path):
    path, frame = _repo(tmp_path)
    now = frame[~((frame["variant"] == "ls") & (frame["scenario"] == "clean"))].copy()
    one = frame[~((frame["variant"] == "icp-adam") & (frame["seed"] == 1) & (frame["scenario"] == "clean"))]
    now.loc[_row(now, "icp-adam", 0), "top1"] += 0.001
    table = drift.compare(one, now).set_index(["condition", "variant"])
    assert table.loc[("fashion-mnist/resnet20/clean", "ls"), "verdict"] == "gone"
    # one committed seed is judged against the spread pooled over the other variants
    sigma = drift.pooled_sd(drift.headline_values(one))["top1"]
    assert table.loc[("fashion-mnist/resnet20/clean", "icp-adam"), "bound"] == pytest.approx(
        2 * sigma * (1 / 1 + 1 / 2) ** 0.5)
    assert table.loc[("fashion-mnist/resnet20/clean", "icp-adam"), "verdict"] == "within the seeds' spread"
    # a committed summary of one seed everywhere has no spread to judge against
    single = frame[frame["seed"] == 0]
    moved = single.assign(top1=single["top1"] + 0.001)
    assert set(drift.compare(single, moved)["verdict"]) <= {"one seed", "unchanged"}
    assert "one seed" in set(drift.compare(single, moved)["verdict"])


def test_the_command_line_exits_with_the_verdict_and_a_missing_file_is_one_line(tmp_path):
    path, _ = _repo(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "icp", "drift", "--summary", str(path)], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "verdict: nothing moved: the same numbers as committed"
    gone = subprocess.run([sys.executable, "-m", "icp", "drift", "--summary", str(tmp_path / "none.csv")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "dvc repro" in gone.stderr
