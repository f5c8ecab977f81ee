"""Training costs counted, not only declared: ``python -m icp.flops`` counts every method's step with torch's FLOP
counter and writes results/reference/flops.csv; the costs read it (icp.methods.options.counted_cost)."""
import csv

import pytest

from icp.methods import options as opts
from icp.methods.options import CONFIRMED, FLOPS_TABLE, counted_cost, epoch_costs, training_cost

TOLERANCE = 0.05  # a declaration more than 5 % off its count fails, unless named here with the reason
# (method, model) -> why the declaration differs from the count (the costs use the count there)
KNOWN = {
    ("mixskd", "preact_resnet18"): "MixSKD declares 4, its 3-stage value: step_cost cannot see the model; its "
                                   "auxiliary branches repeat the later stages, S + 1 = 5 ce steps on 4 stages",
    ("mixskd", "resnet50_cifar"): "as preact_resnet18 (4 stages), and ResNet-50's later stages cost more than "
                                  "its first",
    ("byot", "preact_resnet18"): "BYOT declares ce's step: its auxiliary heads' cost depends on the model (2 % on "
                                 "resnet20), which step_cost cannot see",
    ("byot", "resnet50_cifar"): "as preact_resnet18; ResNet-50's heads bottleneck 2048 channels",
}


def _committed() -> list[dict]:
    with open(FLOPS_TABLE, newline="") as f:
        return list(csv.DictReader(f))


def test_every_declaration_is_within_5_percent_of_its_count():
    rows = _committed()
    assert rows, f"{FLOPS_TABLE}: empty; rerun python -m icp.flops"
    off = {}
    for r in rows:
        counted, declared = float(r["counted"]), float(r["declared"])
        if abs(counted / declared - 1) > TOLERANCE:
            off[r["method"].partition(":")[0], r["model"]] = f"{r['method']}: {counted} counted, {declared} declared"
    unexplained = {k: v for k, v in off.items() if k not in KNOWN}
    assert not unexplained, f"declared costs more than 5 % off their FLOP count: {unexplained}"
    stale = [k for k in KNOWN if k not in off]
    assert not stale, f"KNOWN names {stale}, whose declaration now matches its count: drop them"


def test_the_table_counts_every_method_on_every_model_of_the_paper_grid():
    """A method added or a model added to the grid: rerun ``python -m icp.flops`` and commit the table."""
    from icp import flops  # torch: the registry's kinds
    from icp.methods import get, list_methods

    have = {(r["method"], r["model"]) for r in _committed()}
    missing = []
    for model in flops.grid_models():
        kind = flops.kind_of(model)
        missing += [(m, model) for m in list_methods() if kind in get(m).supports and (m, model) not in have]
    assert not missing, f"{FLOPS_TABLE.name} lacks {missing}: rerun python -m icp.flops and commit it"
    assert {r["torch"] for r in _committed()} and all(int(r["batch"]) > 0 for r in _committed())


def test_the_count_of_ce_is_one_and_of_icp_its_refinement_steps():
    """Live on the CPU, on a tiny input: ce over ce is 1; ICP (K refinement steps after its warm-up, counted at
    the last epoch) is (2K + 4)/3 to the 1 % of its heads and loss."""
    import torch

    from icp import flops

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as python -m icp.flops: a shared machine's cores are slow for several threads
    try:
        rows = flops.count("resnet20", ["ce", "icp-sgd:steps=1", "icp-adam", "ls"],
                           "config/recipes/cifar-resnet20.yaml", (3, 16, 16), 10, batch=4)
    finally:
        torch.set_num_threads(threads)
    got = {r["method"]: (r["counted"], r["declared"]) for r in rows}
    assert got["ce"] == (1.0, 1.0)
    assert got["ls"] == (1.0, 1.0)  # label smoothing: the same matmuls and convolutions as ce
    assert got["icp-sgd:steps=1"][1] == 2.0 and got["icp-sgd:steps=1"][0] == pytest.approx(2.0, rel=0.02)
    assert got["icp-adam"][1] == pytest.approx(14 / 3, abs=1e-4) and got["icp-adam"][0] == pytest.approx(14 / 3, rel=0.02)


def test_a_count_replaces_the_declaration_where_it_differs_by_more_than_1_percent(tmp_path, monkeypatch):
    table = tmp_path / "flops.csv"
    table.write_text("method,model,counted,declared,data,batch,torch\n"
                     "icp-adam,m1,4.68,4.6667,3x32x32/100,8,2\n"  # within 1 %: the declaration stands
                     "icp-adam,m2,5.2,4.6667,3x32x32/100,8,2\n"  # 11 % more: the count
                     "mixskd,m2,4.97,4.0,3x32x32/100,8,2\n")
    monkeypatch.setattr(opts, "FLOPS_TABLE", table)
    monkeypatch.setattr(opts, "_COUNTED", {})
    assert counted_cost("icp-adam", "m1", 14 / 3) == (14 / 3, f"declared (count 4.680 within {CONFIRMED:.0%})")
    assert counted_cost("icp-adam", "m2", 14 / 3)[0] == 5.2
    assert counted_cost("icp-adam", "m2", 8.0) == (8.0, "declared")  # K = 10: not the step counted
    assert counted_cost("icp-adam", "other", 14 / 3) == (14 / 3, "declared")
    # warm-up epochs keep their ce cost; the refining epochs cost the count
    assert epoch_costs("icp-adam", {}, 4, "m2") == [1.0, 5.2, 5.2, 5.2]
    assert training_cost("icp-adam", {}, 164, "m1") == pytest.approx(41 + 123 * 14 / 3)
    assert training_cost("mixskd", {}, 10, "m2") == pytest.approx(49.7)
    assert training_cost("mixskd", {}, 10) == 40  # no model: declared


def test_the_committed_counts_keep_the_paper_grids_matched_epochs():
    """ICP-Adam counts 4.68 against its declared 14/3 on ResNet-20 (the heads' and losses' matmuls): within 1 %,
    so the compute-matched ce run keeps its 615 epochs (41 warm-up + 123 x 14/3)."""
    assert round(training_cost("icp-adam", {}, 164, "resnet20")) == 615


def test_the_table_declares_what_the_methods_declare_today():
    """A method whose declared cost changed since the count (or whose step did): rerun python -m icp.flops."""
    from icp.throughput import parse_method
    from icp.flops import EPOCHS

    stale = []
    for r in _committed():
        name, options = parse_method(r["method"])
        if name not in opts.OPTIONS:
            stale.append(f"{r['method']} (no such method)")
            continue
        now = epoch_costs(name, options, EPOCHS)[-1]
        if abs(now - float(r["declared"])) > 1e-3:
            stale.append(f"{r['method']} on {r['model']}: {r['declared']} in the table, {now:.4f} declared now")
    assert not stale, f"{FLOPS_TABLE.name} is stale, rerun python -m icp.flops and commit it: {stale}"
