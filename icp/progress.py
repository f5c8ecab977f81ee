"""How far a sweep is and when it ends: runs per hour and an ETA from the records' own throughput (``icp status``).

The ETA weighs every run by the cost model's estimate of its work (:func:`icp.cost.estimate`: images through the
method's cost, GPU-hours on the reference GPU) and calibrates those units on this machine with the runs that are
complete: ``seconds per unit = sum of their compute_s / sum of their units``, per method where the method has a
complete run (a CPU slows ICP more than an H100 does), else over all of them. What is left (the units of the runs not started, and the untrained share of each run in flight, by
epochs) times that rate, over the runs training at once (those in flight now, at least 1), is the ETA. Before any
run is complete the cost model's own GPU-hours stand in, and the line says so. Reads JSON records only (no torch).
"""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Optional

FINAL = ("complete", "diverged")
IN_FLIGHT = ("running", "requeued")


class Progress(NamedTuple):
    total: int
    final: int
    in_flight: int
    per_hour: Optional[float]  # runs completed in the last hour, per hour (None: none complete in it)
    eta_s: Optional[float]  # seconds to the last run (None: nothing left, or nothing to estimate it from)
    basis: str  # where the ETA comes from


def _time(stamp: Optional[str]) -> Optional[dt.datetime]:
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def progress(g, recs: dict[str, dict], states: dict[str, str], study: Optional[str] = None,
             now: Optional[dt.datetime] = None) -> Progress:
    """The progress of ``g``'s runs (one study's, or all): ``recs`` run id -> record, ``states`` run id -> the state
    ``icp status`` shows (``lost`` for a run in flight whose job is gone)."""
    from icp import cost

    now = now or dt.datetime.now(dt.timezone.utc)
    units = {r.run_id: r.gpu_hours for r in cost.estimate(g, runs_per_gpu=1, study=study).runs}
    ids = list(units)
    done = [rid for rid in ids if states.get(rid) in FINAL]
    flying = [rid for rid in ids if states.get(rid) in IN_FLIGHT]
    recent = [t for rid in ids if states.get(rid) == "complete"
              and (t := _time(recs[rid].get("updated_at"))) and (now - t).total_seconds() <= 3600]
    per_hour = None
    if recent:
        starts = [t for rid in ids if rid in recs and (t := _time(recs[rid].get("started_at")))]
        # over the last hour, or since the sweep's first start where that is later (at least a minute)
        span = min(3600.0, max(60.0, (now - min(starts, default=now)).total_seconds()))
        per_hour = len(recent) * 3600.0 / span
    measured = [rid for rid in done if states.get(rid) == "complete" and recs[rid].get("compute_s") and units[rid]]
    method = {rid: g[rid].method for rid in ids}

    def seconds_per_unit(runs: list[str]) -> float:
        return sum(recs[rid]["compute_s"] for rid in runs) / sum(units[rid] for rid in runs)

    # a method's own complete runs calibrate it (a CPU slows ICP far more than an H100 does), else all of them
    overall = seconds_per_unit(measured) if measured else 3600.0
    rates = {m: seconds_per_unit(runs) for m in set(method.values())
             if (runs := [rid for rid in measured if method[rid] == m])}
    left = 0.0
    for rid in ids:
        if states.get(rid) in FINAL:
            continue
        rec = recs.get(rid) or {}
        epochs = ((rec.get("config") or {}).get("train") or {}).get("epochs") or 0
        trained = len(rec.get("epochs") or []) / epochs if epochs else 0.0
        left += units[rid] * (1.0 - min(1.0, trained)) * rates.get(method[rid], overall)
    if left == 0.0:
        return Progress(len(ids), len(done), len(flying), per_hour, None, "nothing left to train")
    basis = (f"from {len(measured)} complete runs' compute here" if measured
             else "from the cost model's H100 GPU-hours: no run complete yet")
    at_once = max(1, len(flying))
    return Progress(len(ids), len(done), len(flying), per_hour, left / at_once,
                    f"{basis}; {at_once} run{'s' if at_once > 1 else ''} at once")


def duration_text(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def line(p: Progress) -> str:
    """One line: final runs of all, in flight, runs per hour and the ETA with its basis."""
    rate = f"{p.per_hour:.1f} runs/h in the last hour" if p.per_hour is not None else "none complete in the last hour"
    eta = (f"ETA {duration_text(p.eta_s)} ({p.basis})" if p.eta_s is not None else p.basis)
    return f"progress: {p.final} of {p.total} runs final, {p.in_flight} in flight; {rate}; {eta}"
