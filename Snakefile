# The paper's benchmark as a Snakemake workflow.
#   snakemake --profile slurm all     # every study, each run a SLURM GPU job submitted through submitit
#   snakemake --profile local all     # the same on this machine (submitit's local executor)
#   snakemake -n all                  # what would run
# The runs come from one place, icp.grid.expand over the grid file: config/paper.yaml, or another with
# --config grid=FILE (config/laptop.yaml, a test grid). Cluster settings (partition, account, GPUs, time limit, memory, CPUs, jobs at once) live in the
# profiles (profiles/*/config.yaml), not here.
import os
import sys

from snakemake.utils import min_version

from icp import figures as icp_figures
from icp import grid as icp_grid
from icp import gridfile as icp_gridfile
from icp import preflight as icp_preflight
from icp import records as icp_records
from icp import run_config as icp_run_config
from icp import runlock as icp_runlock
import icp.results.verdict as icp_verdict
from icp.schema import ConfigError

min_version("9.0")

# `--report`: Snakemake warns once per output it has no job metadata for (results that DVC pulled or another
# checkout made: every run's record), "a non critical warning" that buried the report's own lines; one line instead
if "--report" in sys.argv:
    icp_report_notes = icp_figures.quiet_missing_metadata()


# a grid file given to --configfile (a Snakemake habit) merges its keys into the config and would plan the paper grid
if {"studies", "runs_dir", "recipes"} & set(config):
    _given = [str(f) for f in getattr(workflow, "configfiles", [])] or [
        "the --configfile"
    ]
    sys.exit(
        f"icp: error: {_given[-1]} is a grid file, not a Snakemake config: give it as "
        f"`--config grid={_given[-1]}` (and no --configfile)"
    )
# One Snakemake per checkout (icp.runlock): the first takes the sweep lock for its life and clears the locks that a
# killed Snakemake left (no `--unlock` needed); a second sweep is refused at onstart while the first is alive
_SWEEP_HELD, _SWEEP_HOLDER = icp_runlock.hold_checkout()
if _SWEEP_HELD and (_line := icp_runlock.clear_stale_locks()):
    print(f"warning: {_line}", file=sys.stderr)
GRID_FILE = config.get("grid", "config/paper.yaml")
try:
    GRID_CONFIG = icp_gridfile.load(GRID_FILE, check=False, apply_params=False)
    # --config fid_features=inception: the generative study's FIDs with Inception-v3 (see the grid schema)
    if "fid_features" in config:
        GRID_CONFIG["fid_features"] = str(config["fid_features"])
    # workflow/schemas/grid.schema.yaml; a bad grid is one line: file, item, what is accepted, did-you-mean
    icp_gridfile.validate_schema(GRID_CONFIG, GRID_FILE)
    # with the final runs of the tuned cells whose selection an earlier invocation wrote (workflow/rules/tuning.smk)
    GRID = icp_grid.expand(icp_gridfile.with_params(GRID_CONFIG, GRID_FILE), GRID_FILE)
    GRID = GRID.with_selections()
    # the figures of the grid's studies: every figure module of icp/figures/ and of the icp.figures entry points
    # (one that cannot be read is one line, as a bad grid is)
    FIGURES = icp_figures.available(GRID.studies)
    for _line in icp_figures.unknown_studies(GRID.studies):
        print(_line, file=sys.stderr)
except ConfigError as exc:
    sys.exit(f"icp: error: {exc}")
# a record.json that cannot be parsed, or whose run is not final and that no live trainer holds (a job that wrote
# `interrupted` after its launcher gave up), is not a finished run: set it aside (one line each), the run resumes;
# a run made with another config than the grid's run has today (a setting outside the run's id, or a code change of
# what a setting means): its state set aside in stale/<digest>/, the run trains again
for _run in GRID.runs.values():
    if (
        os.path.exists(_run.record)
        or os.path.exists(os.path.join(_run.run_dir, icp_records.STOPPED))
    ) and (
        _line := icp_records.set_aside_corrupt(_run.run_dir)
        or icp_records.set_aside_stale(_run.run_dir, icp_run_config.config_digest(_run))
        or icp_records.set_aside_idle(_run.run_dir)
    ):
        print(f"warning: {_line}", file=sys.stderr)


# Before any job starts (never in a dry run): every dataset, FID network and teacher that the runs this call will
# train need (the DAG's train jobs: a call with targets checks only those), where the login side can see it; one
# line each and exit 1 if any is missing. Data only on the compute nodes: --config check_inputs=false (icp.preflight)
onstart:
    if not _SWEEP_HELD:
        sys.exit(
            f"icp: error: another Snakemake runs in this checkout ({_SWEEP_HOLDER}): two sweeps of one "
            f"checkout would train the same runs twice; wait for it or stop it first"
        )
    icp_preflight.stop_if_unsubmittable(workflow)
    icp_preflight.stop_if_missing(
        GRID,
        config.get(icp_preflight.SWITCH, True),
        icp_preflight.planned_runs(workflow),
    )
    # runs, as the README and icp status count them: Snakemake's steps also count selections and tables
    print(
        icp_grid.run_count_line(GRID, icp_preflight.planned_runs(workflow)),
        file=sys.stderr,
    )


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        records,
        tuned_finals,
        expand(
            f"{GRID.results_dir}/tables/{{study}}.{{ext}}",
            study=GRID.studies,
            ext=["csv", "md", "tex"],
        ),
        expand(
            f"{GRID.figures_dir}/{{figure}}.{{ext}}",
            figure=FIGURES,
            ext=["png", "pdf"],
        ),
        # which method wins in each of main, noisy, fewshot and tuned, over its units (icp.results.verdict)
        expand(f"{GRID.results_dir}/tables/verdict.{{ext}}", ext=["csv", "md"])
        if icp_verdict.applies(GRID.studies)
        else [],


rule runs:
    input:
        records,
        tuned_finals,
