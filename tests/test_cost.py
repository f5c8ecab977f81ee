"""``icp grid --cost``: a grid's GPU-hours from a committed bench table (icp/cost.py, icp/throughput.py,
icp/bench_tables.py)."""
import re

import pytest
import yaml

from icp import bench_tables, cli, cost, grid, throughput
from tests.conftest import REPO

HEADER = "gpu,model,method,data,config,batch,img_per_s,estimated,source\n"


def _table(ref, gpu, rows):
    (ref / gpu).mkdir(parents=True)
    (ref / gpu / throughput.TABLE).write_text(HEADER + "".join(f"{gpu},{r}\n" for r in rows))
    return ref


def _tiny_grid(tmp_path, epochs=3, batch=100, **block):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"optim": {"name": "sgd", "lr": 0.1}, "schedule": {"name": "cosine"},
                                      "train": {"epochs": epochs, "batch_size": batch}}))
    g = {"runs_dir": str(tmp_path / "runs"), "seeds": [0, 1],
         "recipes": {"fashion-mnist/resnet20": str(recipe)},
         "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "ls"]}],
                     "fewshot": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                  "scenarios": ["10shot"], "optimizer_steps": {"fashion-mnist": 20}, **block}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


def test_committed_tables_are_the_bench_outputs():
    """results/reference/<gpu>/throughput.csv is what build_table makes of the committed bench txt files."""
    for gpu in bench_tables.SOURCES:
        assert (throughput.REFERENCE / gpu / throughput.TABLE).read_text() == bench_tables.table_text(bench_tables.build_table(gpu))
    h100 = {(r["model"], r["method"], r["data"], r["config"]): r for r in throughput.read_table("h100")}
    assert h100["resnet20", "ce", "fashion-mnist", "eager"]["img_per_s"] == 13251.6  # bench_all_methods_fp32.txt
    pre = h100["preact_resnet18", "ce", "synthetic-3x32x32", "eager"]  # compiled x resnet20's eager/compiled
    assert pre["estimated"] and pre["img_per_s"] == pytest.approx(26689.2 * 15751.9 / 40215.2, abs=0.1)
    assert set(throughput.available()) >= {"h100", "cpu"}


def test_parse_bench_reads_sections_and_headerless_tables():
    text = ("# comment\nresnet20 ce fashion-mnist cuda 128 9.66 13251.6 1.00\n== compile=x\n"
            "   model method data device  batch  step_ms  img_per_s  ratio_to_ce\n"
            "resnet20 icp-sgd:steps=1 synthetic-3x32x32 cuda 128 3.1 40000.0 1.0\n")
    (t0, r0), (t1, r1) = bench_tables.parse_bench(text)
    assert t0 is None and r0[0]["img_per_s"] == "13251.6" and r0[0]["method"] == "ce"
    assert t1 == "compile=x" and r1[0]["method"] == "icp-sgd:steps=1" and r1[0]["ratio"] == "1.0"


def test_tiny_grid_has_known_gpu_hours(tmp_path):
    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt",
                                               "resnet20,ls,fashion-mnist,eager,100,500.0,0,t.txt"])
    g = grid.load_expand(_tiny_grid(tmp_path))
    est = cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref)
    by = {r.run_id: r for r in est.runs}
    # main: 60,000 images x 3 epochs at 1000 (ce) and 500 (ls) img/s, two seeds each
    assert by["fashion-mnist/resnet20/clean/ce/s0"].gpu_hours == pytest.approx(60000 * 3 / 1000 / 3600)
    assert by["fashion-mnist/resnet20/clean/ls/s1"].gpu_hours == pytest.approx(60000 * 3 / 500 / 3600)
    # few-shot: 10 shots x 10 classes = 100 images = one step of 100 per epoch; 20 optimizer steps = 20 epochs
    few = by["fashion-mnist/resnet20/10shot/ce/s0"]
    assert few.images == 100 * 20 and few.gpu_hours == pytest.approx(100 * 20 / 1000 / 3600)
    assert not any(r.estimated for r in est.runs)
    expected = 2 * (60000 * 3 / 1000 + 60000 * 3 / 500 + 2000 / 1000) / 3600
    assert sum(r.gpu_hours for r in est.runs) == pytest.approx(expected)
    text = cost.render(est, "tiny")
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split()[1] == "6" and float(total.split()[3]) == pytest.approx(expected, abs=0.05)


def test_rules_for_what_the_table_does_not_measure(tmp_path):
    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt",
                                               "resnet20,icp-adam,fashion-mnist,eager,100,500.0,0,t.txt",
                                               "resnet20,ce,fashion-mnist,compile=reduce-overhead,100,3000.0,0,t.txt"])
    # batch 50 (rule 1: a step costs the measured step), icp-adam at K = 10 (rule 2) with 25 % warm-up epochs
    g = grid.load_expand(_tiny_grid(tmp_path, epochs=4, batch=50, methods=["icp-adam"], options={"steps": [10]}))
    est = cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref)
    by = {r.run_id: r for r in est.runs}
    step = 100 / 1000  # seconds per step of ce at the table's batch; batch 50 costs the same
    ce = by["fashion-mnist/resnet20/clean/ce/s0"]
    assert ce.estimated and ce.gpu_hours == pytest.approx(4 * 60000 / 50 * step / 3600)
    icp = by["fashion-mnist/resnet20/10shot/icp-adam+steps=10/s0"]  # 100 images: 2 steps of 50 per epoch
    ratio = 1 + (2 - 1) * (2 * 10 + 1) / (2 * 5 + 1)  # K = 5's extra cost scaled by the FLOPs of K = 10
    epochs = -(-20 // 2)
    warm = int(0.25 * epochs)
    assert icp.estimated and icp.gpu_hours == pytest.approx(((epochs - warm) * ratio + warm) * 2 * step / 3600)
    # packing: C = compiled / eager = 3; k = 4 -> each run's GPU-hours / 3
    packed = cost.estimate(g, "testgpu", runs_per_gpu=4, reference=ref)
    assert [r.gpu_hours * 3 for r in packed.runs] == pytest.approx([r.gpu_hours for r in est.runs])


def test_unknown_gpu_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["grid", "--grid", str(_tiny_grid(tmp_path)), "--cost", "--gpu", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icp: error: --gpu nope: no bench table") and err.count("\n") == 1
    assert "h100" in err and "cpu" in err
    assert cli.main(["grid", "--grid", str(_tiny_grid(tmp_path)), "--gpu", "h100"]) == 2  # --gpu needs --cost


def test_cost_on_the_command_line(tmp_path, capsys):
    assert cli.main(["grid", "--grid", str(_tiny_grid(tmp_path)), "--cost", "--gpu", "h100", "--detail"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^total\s+6\s", out, re.M) and "packing: k = 1 run(s) per GPU" in out
    assert "resnet20 ls h100/bench_all_methods_fp32.txt" in out  # --detail: the row each run's img/s comes from


def test_paper_grid_cost_counts_every_run():
    g = grid.load_expand(REPO / "config" / "paper.yaml")
    est = cost.estimate(g, "h100")
    out = cost.render(est, "config/paper.yaml")
    rows = {m[1]: (int(m[2]), float(m[3])) for m in
            re.finditer(r"^(\w+)\s+(\d+)\s+[\d.]+G\s+([\d.]+)", out, re.M)}
    # the runs of the grid, and the final runs of tuned cells not chosen yet (their upper bound)
    assert rows["total"][0] == len(g.runs) + len(est.bounds) and rows["total"][1] > 0
    for study, ids in g.studies.items():
        finals = sum(len(t.finals) for t in est.tuned if t.study == study and not t.chosen)
        assert rows[study][0] == len(ids) + finals and rows[study][1] > 0
    assert rows["total"][1] <= sum(h for s, (_, h) in rows.items() if s != "total") + 0.5  # shared runs once


def _tuned_cost_grid(tmp_path, epochs=3, batch=100):
    """A tuned study (2 methods x 3 trials at seed 100, finals at seeds 0 and 1) beside a plain one, on the tiny
    recipe; icp-adam's trials differ in K, so their finals differ in cost."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"optim": {"name": "sgd", "lr": 0.1}, "schedule": {"name": "cosine"},
                                      "train": {"epochs": epochs, "batch_size": batch}}))
    lr = {"low": 0.01, "high": 0.5, "log": True, "source": "test"}
    spec = {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "res"), "seeds": [0, 1],
            "recipes": {"fashion-mnist/resnet20": str(recipe)},
            "tuning": {"trials": 3, "seed": 100, "draw_seed": 0, "spaces": {
                "ce": {"optim.lr": lr},
                "icp-adam": {"optim.lr": lr, "method.options.steps": {"low": 1, "high": 8, "int": True,
                                                                      "source": "test"}}}},
            "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"]}],
                        "tuned": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "icp-adam"],
                                   "tune": True}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _rows(text):
    """The rendered table's rows, sub-rows (``  trials``, ``  finals``) included: name -> (runs, GPU-hours)."""
    return {m[1].strip(): (int(m[2]), float(m[3])) for m in
            re.finditer(r"^(\s*\w+)\s+(\d+)\s+(?:<=)?[\d.]+[KMG]?\s+(?:<=)?([\d.]+)", text, re.M)}


def test_a_tuned_grid_counts_its_trials_and_its_finals_as_an_upper_bound(tmp_path):
    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt",
                                               "resnet20,icp-adam,fashion-mnist,eager,100,500.0,0,t.txt"])
    g = grid.load_expand(_tuned_cost_grid(tmp_path))
    est = cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref)
    # the trials are runs of the grid and of their study: 2 methods x 3 trials at seed 100, beside the block's
    # default runs (2 methods x 2 seeds; ce's shared with main)
    trials = [rid for rid in g.studies["tuned"] if "+trial=" in rid]
    assert len(trials) == 2 * 3 and len(g.runs) == 2 * 2 + 2 * 3 and len(est.runs) == len(g.runs)
    # the finals: 2 methods x 2 seeds, not runs of the grid before a selection, counted as their upper bound
    assert [t.name for t in est.tuned] == ["fashion-mnist/resnet20/clean/ce", "fashion-mnist/resnet20/clean/icp-adam"]
    assert len(est.bounds) == 2 * 2 and not any(r.run_id in g.runs for r in est.bounds)

    def direct(runs):  # the estimator on exactly these runs: their GPU-hours
        alone = grid.Grid({r.run_id: r for r in runs}, {"x": [r.run_id for r in runs]}, g.runs_dir)
        return sum(r.gpu_hours for r in cost.estimate(alone, "testgpu", runs_per_gpu=1, reference=ref).runs)

    for cell, tc in zip(g.tuned, est.tuned):
        assert not tc.chosen and [r.run_id for r in tc.trials] == list(cell.trials)
        per_trial = [direct(g.finals(cell, t)) for t in range(3)]
        assert tc.trial == max(range(3), key=lambda t: (per_trial[t], -t))
        assert [r.run_id for r in tc.finals] == [f"fashion-mnist/resnet20/clean/{cell.method}+tuned={tc.trial}/s{s}"
                                                 for s in (0, 1)]
        assert sum(r.gpu_hours for r in tc.finals) == pytest.approx(max(per_trial))
        # a final costs what its trial's configuration costs, at each seed
        trial = next(r for r in est.runs if r.run_id == cell.trials[tc.trial])
        assert [r.gpu_hours for r in tc.finals] == pytest.approx([trial.gpu_hours] * 2)
        assert all(cost.plan(r) == cost.plan(g[cell.trials[tc.trial]]) for r in g.finals(cell, tc.trial))
    ce, icp = est.tuned
    assert ce.trial == 0 and sum(r.gpu_hours for r in ce.finals) == pytest.approx(2 * 60000 * 3 / 1000 / 3600)
    assert g.tuned[1].settings[icp.trial]["method.options.steps"] == max(
        s["method.options.steps"] for s in g.tuned[1].settings)  # the priciest icp-adam trial: the largest K
    rows = _rows(cost.render(est, "tuned"))
    bound = sum(r.gpu_hours for r in est.bounds)
    assert rows["trials"] == (6, pytest.approx(sum(r.gpu_hours for r in est.runs if r.run_id in trials), abs=0.05))
    assert rows["finals"] == (4, pytest.approx(bound, abs=0.05))
    assert rows["tuned"][0] == 2 * 2 + 6 + 4 and rows["main"][0] == 2
    assert rows["total"] == (10 + 4, pytest.approx(sum(r.gpu_hours for r in est.runs) + bound, abs=0.05))
    text = cost.render(est, "tuned")
    assert re.search(r"^  finals\s+4\s+<=[\d.]+[KMG]\s+<=[\d.]+ .*upper bound, the priciest trial", text, re.M)
    # another study's estimate holds no tuned cell
    assert cost.estimate(g, "testgpu", runs_per_gpu=1, study="main", reference=ref).tuned == []


def test_a_chosen_trial_counts_its_finals_as_runs(tmp_path):
    from pathlib import Path

    from icp import jsonfile

    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt",
                                               "resnet20,icp-adam,fashion-mnist,eager,100,500.0,0,t.txt"])
    path = _tuned_cost_grid(tmp_path)
    g = grid.load_expand(path)
    selection = Path(g.selection(g.tuned[1]))
    selection.parent.mkdir(parents=True)
    jsonfile.write({"chosen": 0}, selection)  # icp-adam's first trial, whatever its cost
    g = grid.load_expand(path)
    est = cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref)
    ce, icp = est.tuned
    assert icp.chosen and icp.trial == 0 and all(r.run_id in g.runs for r in icp.finals)
    assert not ce.chosen and est.bounds == ce.finals
    rows = _rows(cost.render(est, "tuned"))
    assert rows["total"][0] == len(g.runs) + 2 == 2 * 2 + 6 + 4 and rows["finals"][0] == 4


def test_measured_packing_is_read_and_a_cold_single_run_is_not_a_rate(tmp_path):
    """A method with a warm k = 1 row packs by its measured best aggregate (ICP variants by the measured ICP
    method); one whose only k = 1 row is cold (first of its call) falls back on the assumed min(k, C)."""
    log = ("packing: ce steps of fashion-mnist/resnet20/clean/ce/s0 (r.yaml) , 4 s per k, 16 CPU threads shared\n"
           "  k=1: 4000.0 img/s\n  k=2: 18000.0 img/s\n  k=4: 24000.0 img/s\n"
           "packing: icp-adam steps of fashion-mnist/resnet20/clean/icp-adam/s0 (r.yaml) , 4 s per k, 16 CPU\n"
           "  k=1: 7000.0 img/s\n  k=2: 8400.0 img/s\n  k=4: 7700.0 img/s\n")
    rows = bench_tables.parse_packing(log, "testgpu", "t.log")
    assert [(r["method"], r["k"], r["cold"]) for r in rows][:2] == [("ce", 1, 1), ("ce", 2, 0)]
    assert all(r["config"] == "eager" and r["model"] == "resnet20" for r in rows)
    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt",
                                               "resnet20,icp-adam,fashion-mnist,eager,100,500.0,0,t.txt",
                                               "resnet20,ce,fashion-mnist,compile=reduce-overhead,100,3000.0,0,t.txt"])
    (ref / "testgpu" / throughput.PACKING_TABLE).write_text(bench_tables.table_text(rows, bench_tables.PACKING_COLUMNS))
    g = grid.load_expand(_tiny_grid(tmp_path, methods=["icp-adam", "icp-sgd"]))
    one = {r.run_id: r for r in cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref).runs}
    four = {r.run_id: r for r in cost.estimate(g, "testgpu", runs_per_gpu=4, reference=ref).runs}
    for rid, r in four.items():
        method = rid.split("/")[3]
        expected = 8400.0 / 7000.0 if method.startswith("icp") else 3.0  # C = 3000 / 1000, the cold ce k = 1 ignored
        assert r.speedup == pytest.approx(expected) and r.gpu_hours == pytest.approx(one[rid].gpu_hours / expected)
    text = cost.render(cost.estimate(g, "testgpu", runs_per_gpu=4, reference=ref), "tiny")
    assert "measured: icp-adam best of k <= 4 8400 / k = 1 7000" in text and "assumed min(k, C), C = 3.00" in text


def test_committed_packing_table_is_the_lease_logs():
    for gpu in bench_tables.PACKING_SOURCES:
        assert (throughput.REFERENCE / gpu / throughput.PACKING_TABLE).read_text() == bench_tables.table_text(
            bench_tables.build_packing(gpu), bench_tables.PACKING_COLUMNS)


def test_a_method_without_rows_costs_its_flops_never_as_ce(tmp_path):
    """Rule 3: a method the bench table does not measure costs the baseline's step times its FLOP ratio (counted in
    results/reference/flops.csv where the count differs from the declaration by more than 1 %, else declared)."""
    from icp.methods.options import step_flops

    ref = _table(tmp_path / "ref", "testgpu", ["resnet20,ce,fashion-mnist,eager,100,1000.0,0,t.txt"])
    g = grid.load_expand(_tiny_grid(tmp_path, methods=["ce", "dlb", "mixskd", "icp-adam"]))
    est = cost.estimate(g, "testgpu", runs_per_gpu=1, reference=ref)
    by = {r.run_id.split("/")[3]: r for r in est.runs if "/10shot/" in r.run_id and r.run_id.endswith("/s0")}
    ce = by["ce"].gpu_hours
    assert by["dlb"].gpu_hours == pytest.approx(ce) and "FLOPs" in by["dlb"].speed.basis  # DLB as its paper: 1
    assert by["mixskd"].gpu_hours == pytest.approx(4 * ce)  # resnet20 counts 3.97: within 1 % of the declared 4
    warm = int(0.25 * 20)  # ICP-Adam: its warm-up epochs at ce's speed, then 14/3
    assert by["icp-adam"].gpu_hours == pytest.approx(ce * (warm + (20 - warm) * 14 / 3) / 20)
    # on PreAct ResNet-18 MixSKD counts 4.97 (4 stages) against its declared 4: the count
    ratio, basis = step_flops("mixskd", {}, 10, "preact_resnet18")
    assert ratio == pytest.approx(4.965, abs=0.01) and basis.startswith("counted")
    ratio, basis = step_flops("mixskd", {}, 10, "resnet20")  # ResNet-20 counts 3.97: the declared 4 stands
    assert ratio == 4.0 and re.fullmatch(r"declared \(count 3\.9[67]\d within 1%\)", basis), basis


def test_a_small_grid_on_the_cpu_table_shows_its_hours_not_zero():
    from icp import cost

    assert (cost.hours_text(0.0123), cost.hours_text(1.25), cost.hours_text(0)) == ("0.012", "1.2", "0.0")
    assert (cost.images_text(4.5e5), cost.images_text(2.53e9)) == ("0.45M", "2.53G")
    text = cost.report(str(REPO / "config" / "laptop.yaml"), "cpu", 1)
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert float(total.split()[3]) > 0, total
