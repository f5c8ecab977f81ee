# Equal tuning (icp.tuning, the grid's `tuning` section and blocks with `tune: true`): a tuned cell's trials
# train as any run of the grid; when their records are complete, the checkpoint `select` writes the cell's
# selection record (the trial with the best last-epoch validation top-1; no test number is read); the final runs
# are then the chosen trial at the cell's seeds (`<method>+tuned=<trial>`), which `tuned_finals` finds through
# the checkpoint, so one `snakemake all` runs trials, selection and finals, and a rerun does nothing.
import json
import re

TUNED = {cell.name: cell for cell in GRID.tuned}


checkpoint select:
    input:
        lambda wc: [GRID[rid].record for rid in TUNED[wc.cell].trials],
    output:
        f"{GRID.results_dir}/tuning/{{cell}}/selection.json",
    log:
        f"{GRID.results_dir}/logs/select/{{cell}}.log",
    wildcard_constraints:
        cell="|".join(re.escape(name) for name in TUNED) or "(?!x)x",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        grid=GRID_FILE,
    shell:
        "$ICP_WORKFLOW_PYTHON -m icp select --grid {params.grid} --cell {wildcards.cell} --out {output} > {log} 2>&1"


def tuned_finals(wildcards=None):
    """The records of every tuned cell's final runs: the chosen trial at the cell's seeds (after its selection)."""
    out = []
    for cell in GRID.tuned:
        with open(checkpoints.select.get(cell=cell.name).output[0]) as f:
            sel = json.load(f)
        out += [GRID[rid].record for rid in sel["finals"]]
    return out
