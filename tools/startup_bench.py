"""Start-up benchmark (issue 40): how long a run takes to reach its first training step, against ``import torch``.

    python tools/startup_bench.py [--repeat 3] [--config config/fmnist-ce.yaml] [--set KEY=VALUE ...]

Prints a table: the wall time of ``import torch``, ``import icp.engine`` and ``icp train`` up to its first training
step (the laptop recipe by default: Fashion-MNIST, ResNet-20, standard augmentation, on the CPU), each the median of
``--repeat`` fresh interpreters started from this process, and each as a ratio to ``import torch``; then
``python -X importtime -c "import icp.engine"`` digested: the import time of each top-level package outside torch.
Needs the Fashion-MNIST files under ``data/`` (``icp data``). Nothing is written outside a temporary folder.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_STEP = """
import os, sys, time
t0 = float(os.environ["ICP_BENCH_T0"])
from icp import engine
real = engine.Trainer.train_step
def first(self, *args, **kwargs):
    print(f"FIRST_STEP {time.time() - t0:.3f}", flush=True)
    os._exit(0)
engine.Trainer.train_step = first
from icp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def timed(argv: list[str], env: dict | None = None, marker: str | None = None) -> float:
    """Seconds from starting ``argv`` to its exit, or to the ``marker`` line it prints (its number)."""
    env = {**os.environ, **(env or {}), "ICP_BENCH_T0": repr(time.time())}
    t0 = float(env["ICP_BENCH_T0"])
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.time() - t0
    if marker is None:
        if out.returncode:
            raise SystemExit(f"startup_bench: {' '.join(argv[:3])} failed: {out.stderr[-500:]}")
        return wall
    found = re.search(rf"^{marker} ([\d.]+)$", out.stdout, re.M)
    if not found:
        raise SystemExit(f"startup_bench: no first step: {(out.stdout + out.stderr)[-800:]}")
    return float(found[1])


def import_digest(module: str) -> list[tuple[str, float]]:
    """``-X importtime`` of ``module``: seconds of import per top-level package (self times summed)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300).stderr
    per = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            per[m[2].split(".")[0]] += int(m[1]) / 1e6
    return per.most_common()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="fresh interpreters per measurement (the median is shown)")
    p.add_argument("--config", default="config/fmnist-ce.yaml", help="the run's config (icp train --config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="overrides (icp train --set); the default is the laptop's: CPU, 500 images, no bars")
    args = p.parse_args(argv)
    sets = args.set or ["train.device=cpu", "data.train_subset=500", "data.test_subset=500", "train.progress=false"]
    with tempfile.TemporaryDirectory() as tmp:
        train = [sys.executable, "-c", FIRST_STEP, "train", "--config", args.config,
                 *[a for s in sets for a in ("--set", s)], "--out", str(Path(tmp) / "run")]
        rows = {"import torch": [sys.executable, "-c", "import torch"],
                "import icp.engine": [sys.executable, "-c", "import icp.engine"]}
        times = {name: statistics.median(timed(cmd) for _ in range(args.repeat)) for name, cmd in rows.items()}
        times["icp train to its first step"] = statistics.median(
            timed(train, marker="FIRST_STEP") for _ in range(args.repeat))
    torch_s = times["import torch"]
    print(f"start-up on {os.cpu_count()} CPUs, median of {args.repeat} fresh interpreters "
          f"({args.config} {' '.join(sets)})")
    print(f"{'stage':<32} {'seconds':>8} {'x torch':>8} {'beyond torch':>13}")
    for name, s in times.items():
        print(f"{name:<32} {s:8.2f} {s / torch_s:8.2f} {s - torch_s:12.2f}s")
    print("\nimport icp.engine, by top-level package (python -X importtime, self times summed):")
    for package, s in import_digest("icp.engine")[:10]:
        print(f"  {package:<28} {s:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
