"""The converged Fashion-MNIST reference (config/reference.yaml, tools/gpu_reference.sh): its runs are the paper
grid's own, and the script that makes it on a GPU runs end to end on the CPU with a tiny grid."""
import collections
import csv
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from icp import config, grid
from tests.conftest import REPO

REFERENCE = REPO / "config" / "reference.yaml"
PAPER = REPO / "config" / "paper.yaml"
# the grid files' own lists (their YAML anchors), not copies
LISTS = yaml.safe_load((REPO / "config" / "reference.yaml").read_text())
METHODS, HEADLINE = set(LISTS["x-methods"]), set(LISTS["x-headline"])
PAPER_LISTS = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def test_the_reference_grid_lists_the_paper_grids_methods():
    assert (METHODS, HEADLINE) == (set(PAPER_LISTS["x-methods"]), set(PAPER_LISTS["x-headline"]))


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_reference", REPO / "tools" / "gpu_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return grid.load_expand(REFERENCE)


def test_every_reference_run_is_a_paper_run_with_the_same_id_and_config(reference):
    paper = grid.load_expand(PAPER)
    assert reference.runs_dir == paper.runs_dir
    for rid, run in reference.runs.items():
        assert rid in paper.runs, f"{rid} is not a run of {PAPER.name}"
        twin = paper[rid]
        assert (run.run_dir, run.recipe, run.overrides, run.depends) == (twin.run_dir, twin.recipe, twin.overrides,
                                                                         twin.depends), rid
        assert config.load(run.recipe, run.overrides).digest() == config.load(twin.recipe, twin.overrides).digest()
        assert set(run.studies) <= set(twin.studies), rid  # a reference study's run is in the paper's study too


def test_reference_grid_is_fashion_mnist_at_the_full_recipe_with_controls(reference):
    sizes = {study: len(ids) for study, ids in reference.studies.items()}
    # each study: its methods, the moving icp-sgd and two controls at 3 seeds, and in main (as the paper's) a FLOP-matched
    # ce for each other method that costs more than ce by over 10 % (aikd, cskd, mixskd); the K sweep's 21 runs share 6 with main (icp-adam at K = 5 and the
    # alpha-only control at K = 0, 3 seeds each)
    main, noisy = (len(METHODS) + 3 + 3) * 3, (len(HEADLINE) + 3) * 3
    assert sizes == {"main": main, "noisy": noisy, "steps": 21} and len(reference.runs) == main + noisy + 21 - 6
    runs = list(reference.runs.values())
    assert {(r.dataset, r.model) for r in runs} == {("fashion-mnist", "resnet20")}
    assert {r.seed for r in runs} == {0, 1, 2}
    moving_sgd = "icp-sgd+reduction=sum+step_size=0.2"
    headline = HEADLINE
    # the published icp-sgd and icp-ademamix, and mixup (MixSKD's control): main only
    assert HEADLINE == METHODS - {"icp-sgd", "icp-ademamix", "mixup"}
    matched = {"ce+budget=aikd", "ce+budget=cskd", "ce+budget=mixskd"}
    for study, scenario, methods in (("main", "clean", METHODS | matched), ("noisy", "sym0.4", headline)):
        selected = reference.select(study)
        assert {r.scenario for r in selected} == {scenario}
        variants = collections.Counter(r.variant for r in selected)
        assert set(variants) == methods | {moving_sgd, "icp+steps=0", "ce+budget=icp-adam"}  # and both controls
        assert set(variants.values()) == {3}
    steps = reference.select("steps")
    assert {r.method for r in steps} == {"icp-adam", "icp"}  # K = 0 is the alpha-only control
    assert {dict(r.options).get("steps", 5) for r in steps} == {0, 1, 2, 3, 5, 10, 20}
    epochs = {r.variant: config.load(r.recipe, r.overrides).train.epochs for r in runs}
    # the recipe's 30 epochs; the control icp-adam's FLOPs: 7 warm-up epochs + 23 x (2K + 4)/3 = 114.3 ce epochs
    assert epochs["ce"] == 30 and epochs["ce+budget=icp-adam"] == 114
    # AI-KD: 4/3 ce steps a step plus its ce teacher's 30 epochs; CS-KD 4/3; MixSKD ~3.97
    assert epochs["ce+budget=aikd"] == 70 and epochs["ce+budget=cskd"] == 40 and 110 <= epochs["ce+budget=mixskd"] <= 125


def test_packing_takes_a_larger_k_only_for_more_than_ten_percent():
    choose = _tool().choose_k
    assert choose({1: 100.0, 2: 108.0, 4: 109.0, 8: 90.0}) == 1
    assert choose({1: 100.0, 2: 150.0, 4: 160.0, 8: 200.0}) == 8
    assert choose({1: 100.0, 2: 105.0, 4: 140.0, 8: 150.0}) == 4
    assert choose({2: 50.0, 4: 80.0}) == 4


def test_the_scripts_grid_moves_only_the_outputs(tmp_path):
    out = tmp_path / "grid.yaml"
    assert _tool().main(["grid", "--grid", str(REFERENCE), "--results", str(tmp_path / "res"), "--out", str(out)]) == 0
    moved = grid.load_expand(out)
    assert (moved.results_dir, moved.figures_dir) == (str(tmp_path / "res"), str(tmp_path / "res" / "figures"))
    original = grid.load_expand(REFERENCE)
    assert [(r.run_id, r.overrides) for r in moved.runs.values()] == [
        (r.run_id, r.overrides) for r in original.runs.values()]


def test_gpu_reference_script_runs_end_to_end_on_the_cpu(tmp_path, fmnist_root):
    """tools/gpu_reference.sh unchanged, its knobs set to a tiny grid derived from config/reference.yaml."""
    spec = yaml.safe_load(REFERENCE.read_text())
    spec = {k: v for k, v in spec.items() if not k.startswith("x-")}
    spec.update(runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "unused"), data_root=str(fmnist_root),
                figures_dir=str(tmp_path / "unused" / "figures"), seeds=[0])
    spec["set"] = [*spec["set"], "data.train_subset=600", "data.test_subset=300", "train.epochs=1",
                   "train.progress=false"]
    spec["studies"] = {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "icp-adam"]}]}
    tiny = tmp_path / "grid.yaml"
    tiny.write_text(yaml.safe_dump(spec))
    results, archive = tmp_path / "out" / "fmnist", tmp_path / "out" / "reference.tar.gz"
    env = {**os.environ, "PYTHON": sys.executable, "SNAKEMAKE": str(Path(sys.executable).with_name("snakemake")),
           "GRID": str(tiny), "RESULTS": str(results), "OUT": str(archive), "KS": "1 2", "BENCH_SECONDS": "2",
           "BENCH_METHOD": "ce", "WARMUP": "1", "CPUS": "1", "GPU": "cpu"}
    start = time.monotonic()
    proc = subprocess.run(["timeout", "-s", "KILL", "400", "bash", str(REPO / "tools" / "gpu_reference.sh")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - start < 300
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        read = lambda name: tar.extractfile(f"reference-cpu-fmnist/{name}").read().decode()  # noqa: E731
        packing = list(csv.DictReader(io.StringIO(read("packing.tsv")), delimiter="\t"))
        machine, sweep = read("machine.txt"), read("sweep.txt")
        summary = list(csv.DictReader(io.StringIO(read("summary.csv"))))
        print(read("packing.txt"))  # the measured table, for -s
    assert [int(r["k"]) for r in packing] == [1, 2] and all(float(r["aggregate_img_per_s"]) > 0 for r in packing)
    assert sum(r["chosen"] == "yes" for r in packing) == 1
    records = sorted(n for n in names if n.endswith("/record.json"))
    assert records == ["reference-cpu-fmnist/runs/fashion-mnist/resnet20/clean/ce/s0/record.json",
                       "reference-cpu-fmnist/runs/fashion-mnist/resnet20/clean/icp-adam/s0/record.json"]
    assert {r["status"] for r in summary} == {"complete"} and len(summary) == 2
    assert "reference-cpu-fmnist/tables/main.md" in names
    assert any(n.startswith("reference-cpu-fmnist/figures/") and n.endswith(".png") for n in names)
    assert "torch: " in machine and "cpu: " in machine and "gpu: none" in machine
    assert float(dict(line.split(": ", 1) for line in sweep.splitlines())["wall_s"]) > 0
    assert "snakemake_exit: 0" in sweep
