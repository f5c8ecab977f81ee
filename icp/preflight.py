"""Before the first submission: what the runs about to train will need, checked where the login side can see it.

A job that finds no data fails only after its queue wait, and on the paper grid that is hundreds of jobs. So the
workflow (the Snakefile's ``onstart``, which Snakemake calls once the DAG is built and before any job starts, never
in a dry run) resolves the config of every run that has no record yet and checks, reading only the file system:

* each dataset at its ``data.root`` (:func:`icp.data.missing`; a run with ``data.download: true`` fetches its own);
* each FID feature network (``train.fid_features``): Inception's weights file, given or in torch hub's cache, or a
  classifier run directory that is neither a run of this grid nor on disk;
* each AI-KD teacher (``method.options.teacher``) that is neither a run of this grid nor on disk.

It stops the workflow with one line per missing thing, naming how many runs need it and the command that prepares
it. Where the data lives only on the compute nodes, ``--config check_inputs=false`` (or ``config: {check_inputs:
false}`` in a profile) skips the check; a job that then finds nothing ends ``failed`` with the cause in its record
(:func:`icp.launch.record_stop`), never ``not started``.
"""
from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from icp import config, data
from icp.models import INCEPTION_FILE, INCEPTION_URL, torch_hub_dir
from icp.schema import read_yaml

SWITCH = "check_inputs"  # --config check_inputs=false skips the check


def _inception(spec: str) -> Optional[str]:
    _, _, given = spec.partition(":")
    path = Path(given).expanduser() if given else torch_hub_dir() / "checkpoints" / INCEPTION_FILE
    if path.is_file():
        return None
    return (f"FID's Inception-v3 weights not found at {path} (the jobs cannot download them without internet): "
            f"`curl -L -o {path} {INCEPTION_URL}`, or set fid_features: inception:PATH")


def _run_dir(path: str, what: str, produced: set[str]) -> Optional[str]:
    """A run directory or checkpoint a run reads: produced by this grid, or already on disk."""
    p = Path(path)
    if os.path.normpath(path) in produced or p.is_file() or any((p / f).is_file() for f in ("best.pt", "last.pt")):
        return None
    return f"{what} {path} not found (no best.pt or last.pt) and no run of this grid trains it: train it first"


def needs(cfg: config.Config, produced: set[str]) -> list[str]:
    """The missing things one run's config needs, one line each (empty: nothing missing)."""
    lines = []
    if not cfg.data.download and (line := data.missing(cfg.data.dataset, cfg.data.root)):
        lines.append(line)
    fid = cfg.train.fid_features
    if fid:
        from icp.models import GENERATIVE

        if fid == "inception" or fid.startswith("inception:"):
            line = _inception(fid)
        elif cfg.model.name in GENERATIVE:
            line = _run_dir(fid, "train.fid_features: the classifier run", produced)
        else:
            line = None
        if line:
            lines.append(line)
    teacher = str(cfg.method.options.get("teacher") or "")
    if teacher and (line := _run_dir(teacher, "method.options.teacher:", produced)):
        lines.append(line)
    return lines


def missing(runs: Iterable, produced: Iterable[str] = ()) -> list[str]:
    """One line per missing thing that the runs without a record (:class:`icp.grid.Run`) need, with how many runs
    need it; ``produced``: the run directories the workflow itself trains (teachers, FID classifiers)."""
    produced = {os.path.normpath(p) for p in produced}
    count: dict[str, list[str]] = defaultdict(list)
    recipes: dict[str, dict] = {}
    for run in runs:
        if os.path.exists(run.record):
            continue
        recipe = recipes.get(run.recipe) or recipes.setdefault(run.recipe, read_yaml(run.recipe, "recipe"))
        for line in needs(config.resolve(recipe, list(run.overrides)), produced):
            count[line].append(run.run_id)
    return [f"{line} [{len(ids)} run{'s' if len(ids) > 1 else ''} need{'' if len(ids) > 1 else 's'} it, e.g. "
            f"{ids[0]}]" for line, ids in count.items()]


def check_grid(grid, enabled: object = True, runs: Optional[Iterable[str]] = None) -> list[str]:
    """The missing lines for every run of ``grid`` (an :class:`icp.grid.Grid`: with the finals of the tuned cells
    already chosen; the finals of a cell not yet chosen need what its trials need) that has no record yet, or only
    for the run ids ``runs`` (the jobs this call of the workflow will start); nothing when ``enabled`` is false
    (``--config check_inputs=false``)."""
    if str(enabled).lower() in ("0", "false", "no", "off"):
        return []
    produced = [r.run_dir for r in (*grid.runs.values(), *grid.candidates.values())]
    chosen = grid.runs.values() if runs is None else [grid.runs[r] for r in runs if r in grid.runs]
    return missing(chosen, produced)


def planned_runs(workflow) -> Optional[set[str]]:
    """The run ids of the training jobs that Snakemake's DAG will start (``onstart`` comes after the DAG is
    built): a call with targets checks what those need, not the whole grid. None where the DAG cannot say."""
    try:
        return {str(job.wildcards.run) for job in workflow.dag.needrun_jobs() if job.rule.name == "train"}
    except Exception:  # another Snakemake's internals: check the whole grid
        return None


NO_SLURM = ("the slurm profile submits to SLURM, but this machine has no sbatch on its PATH: run on the "
            "cluster's login node, or use --profile local on this machine")


def no_scheduler(workflow) -> Optional[str]:
    """One line when this call would submit train jobs to SLURM (``submitit_executor=slurm``) from a machine
    without ``sbatch``; None otherwise, or where the DAG cannot say."""
    import shutil

    try:
        jobs = [job for job in workflow.dag.needrun_jobs() if job.rule.name == "train"]
        wants = any(str(job.resources.get("submitit_executor", "")) == "slurm" for job in jobs)
    except Exception:
        return None
    return NO_SLURM if wants and shutil.which("sbatch") is None else None


def stop_if_unsubmittable(workflow) -> None:
    """The workflow's ``onstart``, first: a SLURM profile on a machine without SLURM is one line, exit 1, nothing
    written."""
    if (line := no_scheduler(workflow)) is not None:
        print(f"icp: error: {line}", file=sys.stderr)
        raise SystemExit(1)


def stop_if_missing(grid, enabled: object = True, runs: Optional[Iterable[str]] = None) -> None:
    """The workflow's ``onstart``: print ``icp: error: <line>`` for each missing thing that the runs about to
    train need (``runs``; every run of the grid without a record when None) and exit 1 before any job is submitted
    (Snakemake then reports nothing run)."""
    lines = check_grid(grid, enabled, runs)
    for line in lines:
        print(f"icp: error: {line}", file=sys.stderr)
    if lines:
        print(f"icp: {len(lines)} missing input{'s' if len(lines) > 1 else ''}: nothing submitted; data only on the "
              f"compute nodes? --config {SWITCH}=false skips this check", file=sys.stderr)
        raise SystemExit(1)



def swallowed_target(argv: list[str]) -> Optional[str]:
    """The first word that Snakemake's ``--config`` (``-C``) would take as a config entry though it has no ``=``
    (a target written after ``--config``), or None. Like argparse's ``nargs="*"``, the entries end at the next
    option or at ``--``."""
    taking = False
    for word in argv:
        if word in ("--config", "-C"):
            taking = True
        elif word == "--" or (word.startswith("-") and not re.fullmatch(r"-\d+(\.\d*)?", word)):
            taking = False
        elif taking and "=" not in word:
            return word
    return None


def name_swallowed_targets(argv: Optional[list[str]] = None) -> None:
    """Make ``snakemake ... --config check_inputs=false TARGET`` one line instead of Snakemake's traceback.

    ``--config`` takes every word after it, so a target written after it reaches Snakemake's ``parse_config``,
    which raises ``ValueError: Unparsable value`` before the Snakefile is read. Snakemake imports the installed
    executor plugins while it loads its command-line module, before it parses anything, so the plugin package calls
    this: in Snakemake's own process (``argv[0]`` is its script or ``snakemake/__main__.py``) a swallowed target
    prints ``icp: error: ...`` and exits 1. Anywhere else it does nothing."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]) if argv else Path()
    if not (script.name == "snakemake" or (script.name == "__main__.py" and script.parent.name == "snakemake")):
        return
    if (word := swallowed_target(argv[1:])) is not None:
        print(f"icp: error: --config took {word!r} as a config entry (it reads every word after it as name=value): "
              f"put targets before --config, or end its entries with --", file=sys.stderr)
        raise SystemExit(1)
