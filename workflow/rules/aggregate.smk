# Aggregation and figures: local rules that read run records only (icp.results, icp.figures). With
# `--config partial=true` they read the records that exist, so a half-finished sweep still gives tables whose
# cells say n and a summary that lists every missing run by id.
# `snakemake --report report.html` (or .zip) shows each study's tables (tables/<study>.html) and every figure with
# its caption (icp.figures.CAPTIONS), after a front page (workflow/report/workflow.rst). Snakemake describes the
# jobs behind them from the metadata it recorded when it made them (.snakemake/metadata): so that a report also
# holds them where the results came from DVC, make it with the run that rebuilds them (README, "the report").
# Each step holds one of the login side's `login_jobs` slots: a cluster profile caps them (`resources:
# login_jobs=2`) so that the end of a sweep runs a few light processes there, not one per figure at once.


report: "../report/workflow.rst"


rule summary:
    input:
        records,
        tuned_finals,
    output:
        summary=f"{GRID.results_dir}/summary.csv",
        epochs=f"{GRID.results_dir}/epochs.csv",
        metrics=f"{GRID.results_dir}/metrics.json",
        headline=directory(f"{GRID.results_dir}/dvc"),
        curves=directory(f"{GRID.results_dir}/curves"),
    log:
        f"{GRID.results_dir}/logs/summary.log",
    localrule: True
    conda:
        "../../environment.yml"
    resources:
        login_jobs=1,
    params:
        grid=GRID_FILE,
        out=lambda wc, output: os.path.dirname(output.summary),
    shell:
        "$ICP_WORKFLOW_PYTHON -m icp summarize --grid {params.grid} --out {params.out} > {log} 2>&1"


rule tables:
    input:
        f"{GRID.results_dir}/summary.csv",
        # a tuned study's Equal tuning section reads its cells' selection records (icp.results.tuning)
        lambda wc: [GRID.selection(c) for c in GRID.tuned if c.study == wc.study],
    output:
        csv=f"{GRID.results_dir}/tables/{{study}}.csv",
        md=f"{GRID.results_dir}/tables/{{study}}.md",
        tex=f"{GRID.results_dir}/tables/{{study}}.tex",
        html=report(
            f"{GRID.results_dir}/tables/{{study}}.html",
            category="{study}",
            subcategory="tables",
            caption="../report/table.rst",
        ),
    log:
        f"{GRID.results_dir}/logs/tables-{{study}}.log",
    wildcard_constraints:
        study="|".join(GRID.studies),
    localrule: True
    conda:
        "../../environment.yml"
    resources:
        login_jobs=1,
    params:
        grid=GRID_FILE,
        out=lambda wc, output: os.path.dirname(output.csv),
    shell:
        "$ICP_WORKFLOW_PYTHON -m icp tables --grid {params.grid} --study {wildcards.study} --out {params.out} > {log} 2>&1"


rule verdict:
    input:
        f"{GRID.results_dir}/summary.csv",
    output:
        csv=f"{GRID.results_dir}/tables/verdict.csv",
        md=f"{GRID.results_dir}/tables/verdict.md",
    log:
        f"{GRID.results_dir}/logs/tables-verdict.log",
    localrule: True
    conda:
        "../../environment.yml"
    resources:
        login_jobs=1,
    params:
        grid=GRID_FILE,
        out=lambda wc, output: os.path.dirname(output.csv),
    shell:
        "$ICP_WORKFLOW_PYTHON -m icp tables --grid {params.grid} --verdict --out {params.out} > {log} 2>&1"


rule figure:
    input:
        summary=f"{GRID.results_dir}/summary.csv",
        epochs=f"{GRID.results_dir}/epochs.csv",
        checkpoint=figure_checkpoint,
    output:
        png=report(
            f"{GRID.figures_dir}/{{figure}}.png",
            # grouped by the study the figure draws, beside that study's tables
            category=lambda wc: icp_figures.FIGURES[wc.figure][0],
            subcategory="figures",
            caption="../report/figure.rst",
        ),
        pdf=f"{GRID.figures_dir}/{{figure}}.pdf",
    log:
        f"{GRID.results_dir}/logs/figure-{{figure}}.log",
    wildcard_constraints:
        figure="|".join(FIGURES),
    localrule: True
    conda:
        "../../environment.yml"
    resources:
        login_jobs=1,
    params:
        grid=GRID_FILE,
        results=lambda wc, input: os.path.dirname(input.summary),
        out=lambda wc, output: os.path.dirname(output.png),
        # what the figure shows, for its caption in the report (../report/figure.rst)
        caption=lambda wc: icp_figures.CAPTIONS[wc.figure],
        # the figure's own code (its module, the shared helpers, the registry): a change redraws this figure alone
        code=lambda wc: icp_figures.source_digest(wc.figure),
    shell:
        "$ICP_WORKFLOW_PYTHON -m icp figures --grid {params.grid} --results {params.results} --only {wildcards.figure}"
        " --out {params.out} > {log} 2>&1"
