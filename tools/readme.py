"""Write (or ``--check``) the generated blocks of README.md and docs/*.md, so that no number a reader sees there is
typed by hand.

A block is the text between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; each one lives in exactly one of
those files:

* ``paper-cost``: ``icp grid --grid config/paper.yaml --cost`` (runs, training images and estimated H100 GPU-hours
  per study, the total of distinct runs), as the code computes them from the grid and the bench tables;
* ``paper-tuning``: the paper grid's equal-tuning cost from the same estimate (``icp.cost``): its tuned studies'
  trials, their final runs (an upper bound before the selection: the priciest trial's configuration at each
  seed) and the GPU-hours they add to the other studies' runs;
* ``laptop-run``: what the laptop pipeline trains (``config/laptop.yaml`` with ``params.yaml``, expanded by
  ``icp.grid``: studies, cells, variants, seeds, settings) and how long its last retraining took (from its
  summary, which git holds: the runs' wall times summed, and the CPU they name);
* ``laptop-main``: the headline (last-epoch test top-1) and primary-comparison tables of the laptop pipeline's
  ``results/laptop/tables/main.md`` with the line under them (family, seeds, detectable difference), as ``dvc
  repro`` wrote them;
* ``laptop-tuned``: the Equal tuning section of ``results/laptop/tables/tuned.md`` (default beside tuned, the
  chosen trials, their tuning luck and the tuning compute in ce runs);
* ``verdict``: study main's section of the laptop's verdict per study, ``results/laptop/tables/verdict.md``
  (:mod:`icp.results.verdict`: IQM difference to ce, normalised and in pp, with its stratified bootstrap interval where the
  seeds allow, probabilities of improvement, average ranks and, with 5 units or more, the critical difference), as
  ``icp tables`` wrote it;
* ``paper-methods``: the paper grid's method lists (``x-methods``, ``x-headline``) with their counts;
* ``reference-runs``: the reference grid's runs per study and their estimated H100 GPU-hours;
* ``gpu-reference``: the first GPU results, the complete cells of ``results/reference/h200/fmnist-5ep/tables/main.md``
  with the machine, torch, epochs, seeds, wall time and what was left out, as ``tools/gpu_lease.sh`` wrote them;
* ``figures``: every figure of ``icp/figures/`` (the registry, :mod:`icp.figures`) with the study it draws and its
  caption, in docs/results.md;
* ``config-reference``: every key of the training config with what it accepts, its default and its comment in the
  schema (``icp/config.py``, read by :func:`icp.schema.field_docs`), in docs/config.md;
* ``detectable``: the true difference (in sds of the per-seed differences) that a paired t-test detects with 80 %
  power at 2, 3, 5, 10, 20 seeds (:func:`icp.stats.detectable_difference`).

``python tools/readme.py`` rewrites the blocks in place; ``--check`` exits 1 naming each block that differs
(tests/test_readme.py runs it).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's icp, not another one an editable install points at
README = REPO / "README.md"
DOCS = REPO / "docs"


def files() -> list[Path]:
    """The files whose blocks are generated: the README and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def paper_cost() -> str:
    import os

    from icp import cost

    os.chdir(REPO)  # the grid names its recipes relative to the repository
    lines = [line for line in cost.report("config/paper.yaml", runs_per_gpu=1).splitlines() if line.strip()]
    table = [line for line in lines if not line.startswith(("images:", "GPU-hours per run:", "packing:", "  x"))]
    return "```\n" + "\n".join(table) + "\n```"


def paper_tuning() -> str:
    import os

    from icp import cost, grid as gridlib

    os.chdir(REPO)
    est = cost.estimate(gridlib.load_expand("config/paper.yaml"), "h100", runs_per_gpu=1)
    if not est.tuned:
        return "The paper grid tunes no study."
    parts = []
    for study in dict.fromkeys(t.study for t in est.tuned):
        cells = [t for t in est.tuned if t.study == study]
        trials = list({r.run_id: r for t in cells for r in t.trials}.values())
        finals = [r for t in cells for r in t.finals]
        bound = any(not t.chosen for t in cells)
        seeds = sorted({int(r.run_id.rsplit("/s", 1)[1]) for r in finals})
        own = [r for r in est.runs if r.studies == (study,)] + [r for r in est.bounds if r.studies == (study,)]
        parts.append(
            f"`{study}` trains {len(trials)} trials ({len(cells)} methods and cells × "
            f"{'/'.join(str(n) for n in sorted({len(t.trials) for t in cells}))}, at one seed), "
            f"{sum(r.gpu_hours for r in trials):.1f} H100 GPU-hours, then {len(finals)} final runs (the chosen "
            f"trial at seeds {', '.join(map(str, seeds))}), "
            + (f"at most {sum(r.gpu_hours for r in finals):.1f} GPU-hours (each method's priciest trial at every "
               "seed: an upper bound until the selection)" if bound else
               f"{sum(r.gpu_hours for r in finals):.1f} GPU-hours")
            + f": {sum(r.gpu_hours for r in own):.1f} GPU-hours beyond the runs other studies train")
    return "Equal tuning (`icp grid --cost`, one run per GPU): " + "; ".join(parts) + "."


def laptop_main() -> str:
    """The headline table and the primary comparisons of the laptop's main.md, each with the line under it (the
    family in full under the first table of main.md, the detectable difference under every other)."""
    text = (REPO / "results" / "laptop" / "tables" / "main.md").read_text()
    keep = []
    for section in text.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        body = body.strip().split("\n\n")
        table = next(part for part in body if part.startswith("|"))
        under = body[body.index(table) + 1] if body.index(table) + 1 < len(body) else ""
        if title.startswith(("Test top-1 (%) at the last epoch", "Primary comparisons")):
            keep.append((not title.startswith("Test top-1"), f"*{title}*\n\n{table}\n\n{under}".rstrip()))
    return "\n\n".join(text for _, text in sorted(keep, key=lambda k: k[0]))


GPU_REFERENCE = REPO / "results" / "reference" / "h200" / "fmnist-5ep"


def gpu_reference() -> str:
    """The first GPU table: the complete cells of the H200 reference's main.md (headline and differences), the
    cells left out, and the machine, torch, wall time and GPU-hours of its sweep, from the files the lease wrote."""
    import csv
    import re

    folder = GPU_REFERENCE
    machine = (folder / "machine.txt").read_text().splitlines()
    gpu = next(line for line in machine if line.startswith("NVIDIA")).split(",")[0]
    torch = next(line for line in machine if line.startswith("python")).split("|")[1].strip()
    knobs = dict(re.findall(r"(\w+): (\S+)", next(line for line in machine if line.startswith("budget_s"))))
    sweep_s = int(re.search(r"sweep exit \d+ after (\d+) s", (folder / "sweep.log").read_text())[1])
    with (folder / "sweep.tsv").open() as f:
        runs = list(csv.DictReader(f, delimiter="\t"))
    complete = sum(r["status"] == "complete" for r in runs)
    text = (folder / "tables" / "main.md").read_text()
    keep = []
    for section in text.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        if not title.startswith(("Test top-1 (%) at the last epoch", "Top-1 difference to ce")):
            continue
        lines = body.strip().splitlines()
        rows = [ln for ln in lines[2:] if not ln.split("|")[2].strip().startswith("–") or ln.startswith("| ce |")]
        short = ("Test top-1 (%) at the last epoch, mean ± std (n)" if title.startswith("Test") else
                 "Difference to ce (pp, seeds paired): mean [95 % t interval] (n, p, Holm p)")
        keep.append(f"*{short}*\n\n" + "\n".join(lines[:2] + rows))
    first = re.search(r"first: (.*)$", next(ln for ln in machine if ln.startswith("budget_s")))[1].split()
    head = "\n".join([
        f"- machine: one {gpu}, {torch}; {knobs['k']} runs at once",
        f"- runs: Fashion-MNIST ResNet-20 `main`, {knobs['epochs']} of the recipe's 30 epochs, seeds 0-2; "
        f"{complete} of {len(runs)} complete (`{'`, `'.join(first)}` first)",
        f"- time: {sweep_s} s, {sweep_s / 3600:.2f} GPU-hours"])
    return head + "\n\n" + "\n\n".join(keep)


def laptop_tuned() -> str:
    text = (REPO / "results" / "laptop" / "tables" / "tuned.md").read_text()
    keep = []
    for section in text.split("\n## ")[1:]:
        title, _, body = section.partition("\n")
        if title.startswith("Equal tuning"):
            keep.append(f"*{title}*\n\n{body.strip()}")
    return "\n\n".join(keep) or "(the laptop grid tunes nothing)"


def _grid_lists(path: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / path).read_text())


def paper_methods() -> str:
    """The paper grid's method lists (its YAML anchors), as the studies use them."""
    lists = _grid_lists("config/paper.yaml")
    names = lambda key: ", ".join(f"`{m}`" for m in lists[key])
    return (f"`main` trains {len(lists['x-methods'])} methods ({names('x-methods')}); `noisy` and `fewshot` the "
            f"{len(lists['x-headline'])} headline ones ({names('x-headline')}) with the `icp-sgd` whose input moves; "
            "each of these three studies both controls; `tuned` tunes the headline ones.")


def reference_runs() -> str:
    """The reference grid's size per study and its estimated cost (``icp grid --cost``)."""
    import os

    from icp import cost, grid as gridlib

    os.chdir(REPO)
    g = gridlib.load_expand("config/reference.yaml")
    sizes = ", ".join(f"`{study}` {len(ids)}" for study, ids in g.studies.items())
    est = cost.estimate(g, "h100", runs_per_gpu=1)
    hours = sum(r.gpu_hours for r in est.runs)
    return (f"{len(g.runs)} runs ({sizes}; a run two studies share trains once), about {hours:.1f} H100 GPU-hours one "
            "at a time (`icp grid --grid config/reference.yaml --cost`).")


def verdict() -> str:
    """Study main's section of the laptop's verdict, without its heading (the README's section names it) and the
    file's explanation (docs/results.md gives it); the other studies' sections stay in the file."""
    text = (REPO / "results" / "laptop" / "tables" / "verdict.md").read_text()
    return text.partition("\n## main\n")[2].partition("\n## ")[0].strip()


def laptop_run() -> str:
    import os

    from icp import grid as gridlib, gridfile

    os.chdir(REPO)
    g = gridlib.load_expand("config/laptop.yaml")
    spec = gridfile.load("config/laptop.yaml")
    parts = []
    for study, ids in g.studies.items():
        cells: dict[str, list[str]] = {}
        for rid in ids:
            run = g[rid]
            cell = f"{run.dataset}/{run.model}/{run.scenario}"
            if re.search(r"\+(trial|tuned)=", run.variant):  # a tuned cell's trials and finals: said below
                continue
            if run.variant not in cells.setdefault(cell, []):
                cells[cell].append(run.variant)
        tuned = [c for c in g.tuned if c.study == study]
        text = "; ".join(f"{cell} with {', '.join(f'`{v}`' for v in variants)}" for cell, variants in cells.items())
        if tuned:
            text += (f", each also tuned: {len(tuned[0].trials)} trials at seed {g[tuned[0].trials[0]].seed}, then "
                     f"the chosen one at seeds {', '.join(map(str, tuned[0].seeds))}")
        parts.append(f"`{study}`: {text}")
    seeds = ", ".join(str(s) for s in spec["seeds"])
    settings = ", ".join(f"`{item}`" for item in spec["set"] if not item.startswith(("train.device", "train.progress")))
    text = (f"{len(g.runs)} runs on the CPU ({'; '.join(parts)}; × seeds {seeds}; settings {settings}, "
            f"10 % of the training images held out for validation)")
    summary = REPO / "results" / "laptop" / "summary.csv"  # in git (the records are DVC outputs)
    if summary.is_file():
        import pandas as pd

        runs = pd.read_csv(summary)
        done = runs[runs.status == "complete"]
        if len(done):
            minutes, seconds = divmod(round(done.wall_time_s.sum()), 60)
            text += (f". Its last retraining (`results/laptop/summary.csv`) trained {len(done)} of the {len(g.runs)} "
                     f"runs for {minutes} min {seconds:02d} s of run time in all, two at a time, on "
                     f"{' / '.join(sorted(set(done.device_name.astype(str))))}")
    return text + "."


def detectable() -> str:
    from icp.results.render import markdown_table
    from icp.stats import detectable_difference

    seeds = (2, 3, 5, 10, 20)
    return markdown_table(["seeds (pairs)", *seeds], [["detectable difference (× sd of differences)",
                                                      *(f"{detectable_difference(n, 1.0):.2f}" for n in seeds)]])


def figures() -> str:
    """One line per figure module of ``icp/figures/`` (an installed plugin's figures are not this repository's): its
    name, study and caption (reStructuredText's ``literal`` as Markdown's `literal`)."""
    from icp import figures as registry

    return "\n".join(f"* `{name}` (study `{study}`): {registry.CAPTIONS[name].replace('``', '`')}"
                     for name, (study, _) in registry.FIGURES.items()
                     if registry.module_of(name).__name__.startswith("icp.figures."))


def config_reference() -> str:
    """Every key of the training config (:mod:`icp.config`), one row each: what it accepts (its range check where it
    has one, else its type), its default and the comment beside it in the schema's source."""
    import dataclasses
    import json

    from icp import config
    from icp.schema import field_docs, type_name

    rows = ["| key | accepts | default | what |", "|---|---|---|---|"]
    for section in dataclasses.fields(config.Config):
        for name, annotation, default, note in field_docs(section.default_factory().__class__):
            key = f"{section.name}.{name}"
            accepts = config.RANGES[key][1] if key in config.RANGES else type_name(annotation)
            shown = json.dumps(default).replace("|", "\\|")
            rows.append(f"| `{key}` | {accepts} | `{shown}` | {note.replace('|', '/')} |")
    return "\n".join(rows)


BLOCKS = {"paper-cost": paper_cost, "paper-tuning": paper_tuning, "laptop-run": laptop_run,
          "laptop-main": laptop_main, "laptop-tuned": laptop_tuned, "paper-methods": paper_methods,
          "reference-runs": reference_runs, "verdict": verdict, "detectable": detectable,
          "gpu-reference": gpu_reference, "figures": figures, "config-reference": config_reference}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)


def render(text: str, names=None) -> str:
    """``text`` with its blocks (all of ``names``, default every block) written anew; a missing one is an error."""
    for name in BLOCKS if names is None else names:
        pattern = _pattern(name)
        if not pattern.search(text):
            raise SystemExit(f"readme: no block '{name}'")
        block = BLOCKS[name]()
        text = pattern.sub(lambda m: m[1] + block + "\n" + m[2], text)
    return text


def main(argv: list[str]) -> int:
    texts = {path: path.read_text() for path in files()}
    where = {name: [p for p, t in texts.items() if _pattern(name).search(t)] for name in BLOCKS}
    wrong = {name: paths for name, paths in where.items() if len(paths) != 1}
    if wrong:
        print("readme: each block must be in exactly one file: " + "; ".join(
            f"{n} in {[p.name for p in ps] or 'none'}" for n, ps in wrong.items()))
        return 1
    stale = []
    for path, current in texts.items():
        names = [n for n, ps in where.items() if ps[0] == path]
        wanted = render(current, names) if names else current
        if wanted == current:
            continue
        stale += [f"{n} ({path.name})" for n in names
                  if render_block(current, n) != render_block(wanted, n)]
        if "--check" not in argv:
            path.write_text(wanted)
    if stale and "--check" in argv:
        print(f"readme: generated blocks out of date: {', '.join(stale)} (run python tools/readme.py)")
        return 1
    return 0


def render_block(text: str, name: str) -> str:
    m = re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end: {name} -->", text, re.S)
    return m[1] if m else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
