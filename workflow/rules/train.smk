# Training: one job per run of the grid; its output is the run's record.json, written by the training itself.
# On a cluster (profiles/slurm: `--executor submitit`, icp/executor.py) Snakemake submits the run through submitit
# from its own process, with the profile's resources as cluster options and params.train as the run. Elsewhere
# (profiles/local) the shell below runs: a light local process (icp.launch) that submits the run as a submitit
# local job and waits for it, its own lines in the log.
# A run that stops before it is final (cancelled, out of memory, disk full, node lost, time limit) fails its job
# with one line naming the cause (icp.faults); its record is set aside as record.stopped.json (the output of a
# failed job is not kept), so running the same command again resumes it from last.pt. Complete and diverged
# runs are final and left alone; so is a failed tuning trial (icp.launch.lost_trial: it lost, its job succeeds).


wildcard_constraints:
    run=r"[A-Za-z0-9._+=/-]+",


rule train:
    input:
        # ancient: a dependency's record pulled by DVC (fresh mtime) must not retrain its dependants
        lambda wc: [ancient(r) for r in GRID.depends_records(wc.run)],
    output:
        f"{GRID.runs_dir}/{{run}}/record.json",
    log:
        f"{GRID.logs_dir or GRID.runs_dir}/{{run}}/launch.log",
    conda:
        "../../environment.yml"
    params:
        launcher=launcher_args,
        train=train_args,
    # the interpreter comes from the environment (common.smk), not a parameter: a moved checkout or a new venv
    # changes no run's params, so its finished runs are not trained again. `exec`: the launcher is the job itself, so
    # a SIGTERM to Snakemake's process group reaches it (it keeps a run final before the stop) and no bash dies first
    shell:
        "exec $ICP_WORKFLOW_PYTHON -m icp.launch {params.launcher} -- {params.train} > {log} 2>&1"
