"""The sweep's progress and ETA (icp.progress) from known records: calibrated on the complete runs' compute."""
import datetime as dt

import pytest

from icp import cost, progress
from tests.test_aggregate import expand, record

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def _stamp(minutes_ago):
    return (NOW - dt.timedelta(minutes=minutes_ago)).isoformat()


def test_the_eta_is_the_work_left_at_the_complete_runs_rate_over_the_runs_in_flight(tmp_path):
    g = expand(tmp_path, ["ce", "icp-adam"], seeds=(0, 1, 2))
    units = {r.run_id: r.gpu_hours for r in cost.estimate(g, runs_per_gpu=1).runs}
    rid = lambda method, seed: f"fashion-mnist/resnet20/clean/{method}/s{seed}"  # noqa: E731
    done, flying = [rid("ce", 0), rid("ce", 1)], [rid("ce", 2), rid("icp-adam", 0)]  # in flight: half trained
    recs = {}
    for i, r in enumerate(done):
        recs[r] = {**record(g[r], 0.8, compute_s=100.0 * (i + 1)), "started_at": _stamp(50), "updated_at": _stamp(30)}
    for r in flying:
        rec = record(g[r], 0.8)
        recs[r] = {**rec, "status": "running", "epochs": rec["epochs"][:1], "started_at": _stamp(10)}
    states = {r: rec["status"] for r, rec in recs.items()}
    p = progress.progress(g, recs, states, now=NOW)
    rate = 300.0 / (units[done[0]] + units[done[1]])  # ce's runs calibrate every method (icp-adam has none yet)
    left = units[rid("icp-adam", 1)] + units[rid("icp-adam", 2)] + sum(0.5 * units[r] for r in flying)  # 2 epochs
    assert (p.total, p.final, p.in_flight) == (6, 2, 2)
    assert p.eta_s == pytest.approx(left * rate / 2, rel=1e-9)
    assert p.per_hour == pytest.approx(2 * 3600 / (50 * 60))  # 2 complete since the first start 50 min ago
    assert "ETA" in progress.line(p) and "from 2 complete runs' compute here" in progress.line(p)
    # once icp-adam has a complete run, its own rate weighs its runs left
    icp = rid("icp-adam", 0)
    recs[icp] = {**record(g[icp], 0.8, compute_s=5000.0), "started_at": _stamp(50), "updated_at": _stamp(5)}
    states[icp] = "complete"
    p = progress.progress(g, recs, states, now=NOW)
    own = 5000.0 / units[icp]
    expected = (units[rid("icp-adam", 1)] + units[rid("icp-adam", 2)]) * own + 0.5 * units[rid("ce", 2)] * rate
    assert p.in_flight == 1 and p.eta_s == pytest.approx(expected, rel=1e-9)


def test_before_any_run_is_complete_the_cost_model_stands_in_and_a_done_sweep_has_no_eta(tmp_path):
    g = expand(tmp_path, ["ce"], seeds=(0, 1))
    p = progress.progress(g, {}, {}, now=NOW)
    assert p.eta_s == pytest.approx(3600 * sum(r.gpu_hours for r in cost.estimate(g, runs_per_gpu=1).runs))
    assert "no run complete yet" in p.basis
    recs = {rid: record(run, 0.8) for rid, run in g.runs.items()}
    done = progress.progress(g, recs, {rid: "complete" for rid in recs}, now=NOW)
    assert done.eta_s is None and done.final == done.total == 2
