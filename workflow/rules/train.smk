# Training: one job per run of the grid. The job is a light local process (icp.launch) that submits the run
# through submitit (SLURM, local or debug: the profile's `submitit_executor` resource) and waits for it; its
# output is the run's record.json, written by the training itself. The launcher's own lines go to the log.


wildcard_constraints:
    run=r"[A-Za-z0-9._+=/-]+",


rule train:
    input:
        # ancient: a dependency's record pulled by DVC (fresh mtime) must not retrain its dependants
        lambda wc: [ancient(r) for r in GRID.depends_records(wc.run)],
    output:
        f"{GRID.runs_dir}/{{run}}/record.json",
    log:
        f"{GRID.runs_dir}/{{run}}/launch.log",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        launcher=launcher_args,
        train=train_args,
        python=PYTHON,
    shell:
        "{params.python} -m icp.launch {params.launcher} -- {params.train} > {log} 2>&1"
