"""Where the test suite's time goes (issue 40): pytest's per-test durations, digested, and compared with a baseline.

    python tools/test_durations.py run [--out DIR] [--count-snakemake] [-- PYTEST_ARGS...]
    python tools/test_durations.py report JUNIT.xml [--before BASELINE.xml] [--top 10] [--starts STARTS.log]

``run`` runs the suite as CI does (``python -m pytest -q``, this interpreter) with ``--junitxml`` (whose ``time`` of
each test is its setup, call and teardown together, as ``pytest --durations`` adds them) and then prints the report;
the XML stays in ``--out`` (a temporary folder by default) to be a later run's ``--before``. With
``--count-snakemake`` every Snakemake start of the suite (the tests call the ``snakemake`` beside this interpreter)
is logged with its arguments: the entry script is wrapped for the run and restored after it.

``report`` prints, in markdown: the suite's time (the sum of the tests and the wall time pytest reports), each test
module's total, and the ``--top`` slowest tests, each beside its time in ``--before`` where one is given; with
``--starts``, the number of Snakemake starts per test module.

The committed ``tools/test_durations.md`` is this report for a fresh clone on a 2-core machine. Times are of the
machine that ran them: compare runs of the same machine only.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def read_junit(path: Path) -> tuple[dict[str, float], float]:
    """test id (``tests/test_x.py::name[param]``) -> seconds, and the wall time of the session."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    times = {}
    for case in suite.iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        times[f"{module}.py::{case.get('name')}"] = float(case.get("time") or 0.0)
    return times, float(suite.get("time") or sum(times.values()))


def per_module(times: dict[str, float]) -> collections.Counter:
    """test file -> the seconds of its tests."""
    per = collections.Counter()
    for test, sec in times.items():
        per[test.split("::")[0]] += sec
    return per


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def read_starts(path: Path) -> collections.Counter:
    """Snakemake starts per test module, from the log ``run --count-snakemake`` writes (PYTEST_CURRENT_TEST)."""
    per = collections.Counter()
    for line in path.read_text().splitlines():
        test = line.split("\t")[1] if "\t" in line else ""
        per[test.split("::")[0] or "(outside a test)"] += 1
    return per


def report(junit: Path, before: Path | None = None, top: int = 10, starts: Path | None = None,
           title: str = "") -> str:
    times, wall = read_junit(junit)
    old, old_wall = read_junit(before) if before else ({}, 0.0)
    lines = [f"# {title}", ""] if title else []
    lines += [f"{len(times)} tests, {minutes(sum(times.values()))} in tests, {minutes(wall)} wall"
             + (f" (before: {len(old)} tests, {minutes(sum(old.values()))} in tests, {minutes(old_wall)} wall)"
                if before else ""), ""]
    per, old_per = per_module(times), per_module(old)
    n_starts = read_starts(starts) if starts else None
    head = "| module | s |" + (" before, s |" if before else "") + (" Snakemake starts |" if starts else "")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for module, sec in sorted(per.items(), key=lambda kv: -kv[1]):
        row = f"| {module} | {sec:.0f} |" + (f" {old_per.get(module, 0):.0f} |" if before else "")
        lines.append(row + (f" {n_starts.get(module, 0)} |" if starts else ""))
    if starts:
        lines += ["", f"Snakemake starts: {sum(n_starts.values())}"]
    lines += ["", f"The {top} slowest tests:", "", "| test | s |" + (" before, s |" if before else ""),
              "|---|---|" + ("---|" if before else "")]
    for test, sec in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        was = old.get(test)
        then = (f" {was:.1f} |" if was is not None else " (new) |") if before else ""
        lines.append(f"| {test} | {sec:.1f} |{then}")
    if before:
        gone = sorted(set(old) - set(times))
        named = f" ({', '.join(gone[:5])}{', …' if len(gone) > 5 else ''})" if gone else ""
        lines += ["", f"Tests in the baseline only: {len(gone)}{named}"]
    return "\n".join(lines)


WRAPPER = """#!/bin/bash
printf '%s\\t%s\\t%s\\n' "$(date +%s.%N)" "${{PYTEST_CURRENT_TEST%% *}}" "$*" >> {log}
exec {python} {real} "$@"
"""


def run(out: Path, pytest_args: list[str], count_snakemake: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    junit, starts = out / "junit.xml", out / "snakemake-starts.log"
    entry = Path(sys.executable).with_name("snakemake")
    real = entry.parent / ".untimed" / "snakemake"  # named snakemake still: icp.preflight reads argv[0]
    if count_snakemake:
        if real.exists() or ".untimed" in entry.read_text():
            raise SystemExit(f"test_durations: {entry} is wrapped already (another run counts its starts)")
        real.parent.mkdir(exist_ok=True)
        shutil.copy2(entry, real)
        starts.write_text("")
        entry.write_text(WRAPPER.format(log=starts, python=sys.executable, real=real))
    # a SIGTERM (a timeout, a kill) ends the run through the finally below: the entry script is put back
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}", *pytest_args],
                              cwd=REPO).returncode
    finally:
        if count_snakemake:
            os.replace(real, entry)
            real.parent.rmdir()
    print(report(junit, starts=starts if count_snakemake else None))
    print(f"\n(junit XML: {junit})")
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the suite with --junitxml and print the report")
    r.add_argument("--out", type=Path, default=None, help="where the junit XML goes (default: a temporary folder)")
    r.add_argument("--count-snakemake", action="store_true", help="log every Snakemake start of the suite")
    r.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    s = sub.add_parser("report", help="the report of a junit XML")
    s.add_argument("junit", type=Path)
    s.add_argument("--before", type=Path, default=None, help="a baseline junit XML to compare with")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--starts", type=Path, default=None, help="the Snakemake starts log of `run --count-snakemake`")
    s.add_argument("--title", default="", help="a heading for the report (the machine, the commits compared)")
    args = p.parse_args(argv)
    if args.cmd == "report":
        print(report(args.junit, args.before, args.top, args.starts, args.title))
        return 0
    return run(args.out or Path(tempfile.mkdtemp(prefix="icp-durations-")), args.pytest_args, args.count_snakemake)


if __name__ == "__main__":
    sys.exit(main())
