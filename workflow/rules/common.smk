# Helpers of the rules: the launcher's options from the profile's resources, and a run's icp train arguments.
import os
import sys
from shlex import quote

from icp import launch as icp_launch

PYTHON = sys.executable
# the rules' commands run this interpreter through the environment, not a parameter: a moved checkout or a new
# venv changes no job's params, so no finished run is trained again
os.environ.update(ICP_WORKFLOW_PYTHON=PYTHON)
# the grid's logs_dir, for the launchers (icp.launch: submitit/ beside launch.log), also outside the params, so
# that moving the logs trains nothing again
os.environ.update(ICP_LOGS_DIR=GRID.logs_dir)
# --config partial=true: aggregate the records that exist instead of waiting for (and training) every run
PARTIAL = str(config.get("partial", "false")).lower() in ("1", "true", "yes")


def records(wildcards=None):
    """The record of every run of the grid (only those on disk with partial=true)."""
    paths = [run.record for run in GRID.runs.values()]
    return [p for p in paths if os.path.exists(p)] if PARTIAL else paths


def figure_checkpoint(wildcards):
    """The records of the runs whose checkpoints the figure draws from (icp.figures.checkpoint_runs)."""
    runs = icp_figures.checkpoint_runs(wildcards.figure, GRID)
    return [r.record for r in runs if not PARTIAL or os.path.exists(r.record)]


def launcher_args(wildcards, resources):
    """The launcher's cluster options, from the resources that the profile sets (unset ones keep the defaults)."""
    args = []
    for name, option in icp_launch.RESOURCES.items():
        value = getattr(resources, name, "")
        if str(value) != "":
            args += ["--" + option.replace("_", "-"), quote(str(value))]
    # where the launchers of packed runs meet (icp.pack)
    args += ["--pack-dir", quote(f"{GRID.runs_dir}/.packs")]
    return " ".join(args)


def train_args(wildcards):
    return " ".join(quote(a) for a in GRID[wildcards.run].train_args())
