"""The Snakemake process imports no torch. torch costs about 1 s and 0.6 GB in every process that imports it;
the Snakefile only expands the grid and lists figures, which read the torch-free halves of the registries
(icp.methods.options, icp.model_registry). Each check runs in a fresh subprocess and records every attempt to
import torch, with the stack that made it."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

TORCH = ("torch", "torchvision", "torchmetrics")
# Prepended to each subprocess: an import hook that writes the stack of every torch import to the file argv[1]
# (it lets the import go on, so code that catches a failed import cannot hide one).
HOOK = f"""
import sys, traceback
class _Watch:
    log = sys.argv[1]
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TORCH!r}:
            with open(self.log, "a") as fh:
                fh.write(f"import {{name}}:\\n" + "".join(line for line in traceback.format_stack()[:-1]
                                                      if "<frozen importlib" not in line) + "\\n")
        return None
sys.meta_path.insert(0, _Watch())
sys.argv = sys.argv[1:]
"""


def workflow_imports() -> list[str]:
    """The icp modules that the Snakefile and workflow/rules/*.smk import."""
    found = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for line in path.read_text().splitlines():
            m = re.match(r"\s*from (icp(?:\.\w+)*) import (.+)$", line)
            if m and m[1] == "icp":
                found.update(f"icp.{name.split(' as ')[0].strip()}" for name in m[2].strip("()").split(","))
            elif m:
                found.add(m[1])
            m = re.match(r"\s*import (icp(?:\.\w+)*)", line)
            if m:
                found.add(m[1])
    return sorted(found)


def run_watched(code: str, log: Path, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HOOK + code, str(log), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_the_workflow_imports_and_expands_the_paper_grid_without_torch(tmp_path):
    modules = workflow_imports()
    assert {"icp.grid", "icp.figures"} <= set(modules), modules  # the probe found the Snakefile's imports
    code = "\n".join(f"import {m}" for m in modules) + """
from icp import figures, grid, gridfile
g = grid.expand(gridfile.with_params(gridfile.load("config/paper.yaml", check=False, apply_params=False)),
                "config/paper.yaml")
figs = figures.available(g.studies)
need = [r.record for f in figs for r in figures.checkpoint_runs(f, g)]
args = [r.train_args() for r in g.runs.values()]
print(len(g.runs), len(figs), len(need))
"""
    log = tmp_path / "torch-imports.txt"
    proc = run_watched(code, log)
    assert proc.returncode == 0, proc.stderr
    runs, figs, need = map(int, proc.stdout.split())
    assert runs > 1000 and figs and need  # the paper grid, its figures, and the checkpoints they read
    assert not log.exists(), f"the workflow's modules {modules} import torch:\n{log.read_text()}"


def test_a_snakemake_dry_run_imports_no_torch(tmp_path):
    code = "from snakemake.cli import main\nmain()\n"
    log = tmp_path / "torch-imports.txt"
    laptop = yaml.safe_load((REPO / "config/laptop.yaml").read_text())  # its outputs under tmp: nothing exists yet
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({**laptop, **{k: str(tmp_path / k) for k in
                                                       ("runs_dir", "results_dir", "figures_dir")}}))
    proc = run_watched(code, log, "-n", "all", "--cores", "1", "--quiet", "rules", "--config", f"grid={grid_file}")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^train\s+\d+$", proc.stdout + proc.stderr, re.M), proc.stdout + proc.stderr
    assert not log.exists(), f"the Snakemake process imports torch:\n{log.read_text()}"


def test_the_login_sides_steps_draw_every_figure_from_records_without_torch(tmp_path):
    """The figures and tables a sweep ends with run on the login side: from the laptop grid's committed summary
    and epochs, every figure that reads records only is drawn without importing torch (those drawn from a model
    read the arrays its job wrote: tests/test_figures.py)."""
    code = """
from icp import cli, figures
skip = {"perturbation", "reconstructions", "samples"}
names = [n for n in figures.available(["main", "noisy", "generative", "tuned"]) if n not in skip]
only = [a for n in names for a in ("--only", n)]
cli.main(["figures", "--grid", "config/laptop.yaml", "--results", "results/laptop", *only, "--out", sys.argv[1]])
cli.main(["tables", "--grid", "config/laptop.yaml", "--study", "main", "--out", sys.argv[1]])
print(len(names))
"""
    log = tmp_path / "torch-imports.txt"
    proc = run_watched("import sys\n" + code, log, str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    drawn = list((tmp_path / "out").glob("*.png"))
    assert len(drawn) == int(proc.stdout.split()[-1]) >= 5, proc.stdout
    assert not log.exists(), f"a login-side step imports torch:\n{log.read_text()}"
