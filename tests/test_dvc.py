"""DVC and the cluster path, in a temporary git repository holding a copy of this one: the laptop `dvc repro` on a
tiny params override (metrics, plots, params diff, a second repro that does nothing, push/pull), and a sweep whose
runs are tracked with `icp track`, cloned, pulled and turned into tables and figures by `snakemake all` without
retraining anything."""
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from icp.results import summary

BIN = str(Path(sys.executable).parent)
TINY_PARAMS = {"laptop": {"seeds": [0], "set": ["train.epochs=1", "data.train_subset=200", "data.test_subset=200",
                                                "train.batch_size=50"]}}
SKIP = ("results/laptop/", "figures/", "dvc.lock")  # built again here
OWN_CHECKOUT = True  # its Snakemake runs in a copy of the repository: beside the checkout's tests (conftest)


def sh(cmd, cwd, timeout=600, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(["timeout", "-s", "KILL", str(timeout), *cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def digest(folder: Path, name: str = "record.json") -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob(name)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository with this project's files (as in the working tree), DVC's remote in a temporary folder."""
    root = tmp_path_factory.mktemp("dvc") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if rel.startswith(SKIP) or not (src.exists() or src.is_symlink()):
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / rel, follow_symlinks=False)
    sh(["git", "init", "-q"], root)
    sh(["git", "config", "user.email", "ci@example.org"], root)
    sh(["git", "config", "user.name", "ci"], root)
    sh(["dvc", "remote", "modify", "--local", "local", "url", str(root.parent / "remote")], root)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "copy"], root)
    return root


def test_laptop_dvc_repro_metrics_plots_params_and_push_pull(repo, tmp_path):
    first = sh(["dvc", "repro"], repo, timeout=900)
    # every study's runs, params applied, with the final runs of the tuned cells that dvc repro selected
    listing = sh([f"{BIN}/icp", "grid", "--grid", "config/laptop.yaml"], repo).stderr
    n_runs = int(re.search(r"^(\d+) runs", listing, re.M).group(1))
    assert "Running stage 'train'" in first.stdout
    # no Snakemake warning heads the run (the profiles' constant disk_mb: snakemake#4280's async input size)
    assert "never awaited" not in first.stdout + first.stderr, first.stderr[-2000:]
    # DVC's metric: a file per variant, a column per study (each variant's mean in %), read in 80 columns; the
    # full tree is metrics.json beside it
    shown = sh(["dvc", "metrics", "show"], repo).stdout
    assert max(map(len, shown.splitlines())) <= 80 and "results/laptop/metrics.json" not in shown, shown
    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], repo).stdout)
    (files,) = [m["data"] for m in metrics.values()]  # the workspace
    tree = json.loads((repo / "results/laptop/metrics.json").read_text())
    assert {f: v["data"] for f, v in files.items()} == {
        str(summary.headline_path("results/laptop", v)): row for v, row in summary.headline_files(tree).items()}
    assert files["results/laptop/dvc/icp-adam.json"]["data"]["main"] == round(
        100 * tree["main"]["fashion-mnist/resnet20/clean"]["icp-adam"]["top1_mean"], 2)
    main = tree["main"]["fashion-mnist/resnet20/clean"]
    assert set(main) == {"ce", "ls", "mixskd", "icp-adam", "icp+steps=0", "ce+budget=icp-adam", "ce+budget=mixskd"}  # with the controls
    assert all(v["n"] == 1 for v in main.values())
    assert 0 <= main["ce"]["top1_mean"] <= 1 and tree["runs"] == {"complete": n_runs}
    assert "top1_delta_vs_ce" in main["ls"] and "top1_delta_vs_ce" not in main["ce"]  # one seed: a delta, no p
    vae = tree["generative"]["fashion-mnist/vae/clean"]
    assert set(vae) == {"vae", "icp-adam"} and 0 <= vae["vae"]["ssim_mean"] <= 1
    assert "ssim_delta_vs_vae" in vae["icp-adam"] and "top1_mean" not in vae["icp-adam"]
    # one plot per condition, one line per variant; the VAE's plots its SSIM
    plots = json.loads(sh(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    curves = "results/laptop/curves/"
    assert set(plots) == {f"{curves}{name}.csv" for name in ("top1/fashion-mnist_resnet20_clean",
                                                              "top1/fashion-mnist_resnet20_sym0.4",
                                                              "ssim/fashion-mnist_vae_clean")}
    tuned = tree["tuned"]["fashion-mnist/resnet20/clean"]  # the defaults and the finals, no trial
    assert {v.split("+")[0] for v in tuned} == {"ce", "ls"} and not any("+trial=" in v for v in tuned)
    assert sum("+tuned=" in v for v in tuned) == 2
    for name, y, variants in (("top1/fashion-mnist_resnet20_clean", "top1_mean", set(main) | set(tuned)),
                              ("ssim/fashion-mnist_vae_clean", "ssim_mean", set(vae))):
        (plot,) = plots[f"{curves}{name}.csv"]
        assert plot["content"]["encoding"]["color"]["field"] == "variant"
        values = plot["content"]["data"]["values"]
        # in % (the tables' units), not fractions
        assert {v["variant"] for v in values} == variants and all(0 <= float(v[y]) <= 100 for v in values)
        assert y != "top1_mean" or max(float(v[y]) for v in values) > 1
    # every figure of the laptop grid's studies (the registry, icp.figures), and nothing else
    from icp import figures as registry, gridfile

    laptop = gridfile.load(repo / "config/laptop.yaml", check=False, apply_params=False)
    drawn = sorted(p.stem for p in (repo / "figures/laptop").glob("*.png"))
    assert drawn == sorted(registry.available(laptop["studies"])), drawn
    assert all((repo / "figures/laptop" / f"{f}.pdf").exists() for f in drawn)
    for name in ("learning_curves", "compute", "noise", "perturbation"):  # drawn from data, not empty canvases
        assert (repo / "figures/laptop" / f"{name}.png").stat().st_size > 10_000
    again = sh(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in again.stdout and "Running stage" not in again.stdout
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "laptop results"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["laptop"]["seeds"] = [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    diff = json.loads(sh(["dvc", "params", "diff", "--json"], repo).stdout)
    assert diff["params.yaml"]["laptop.seeds"] == {"old": "[0]", "new": "[0, 1]"}
    sh(["git", "checkout", "params.yaml"], repo)
    # push/pull round trip of the checkpoints and records
    sh(["dvc", "push"], repo)
    runs = repo / "results/laptop/runs"
    before = {**digest(runs), **digest(runs, "last.pt")}
    assert sum(k.endswith("last.pt") for k in before) == n_runs
    shutil.rmtree(runs)
    shutil.rmtree(repo / ".dvc/cache")
    sh(["dvc", "pull"], repo)
    assert {**digest(runs), **digest(runs, "last.pt")} == before
    assert "up to date" in sh(["dvc", "status"], repo).stdout
    # the report command exactly as the README prints it: exit 0, one file, and dvc status still clean after it
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The report"):]
    command = re.search(r"```bash\n(snakemake [^\n]*--report [^\n]*)\n```", section)[1]
    made = sh(shlex.split(command), repo, timeout=600)
    assert (repo / "report.html").stat().st_size > 100_000
    assert "up to date" in sh(["dvc", "status"], repo).stdout
    # no wall of "Missing metadata" warnings (records that DVC pulled have no Snakemake job): one line says it
    assert "Missing metadata" not in made.stderr and made.stderr.count("made outside this Snakemake") <= 1
    _the_report_renders_every_table_and_figure_in_a_browser(repo / "report.html", tmp_path)


def _the_report_renders_every_table_and_figure_in_a_browser(report, tmp_path):
    """Snakemake's report is a JavaScript app: open it in headless Chromium (Debian's), let it render, and read the
    DOM it built. Each study is a category with its table and its figures, each figure named with its caption."""
    from icp import figures

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (.ci/run installs Debian's)")
    home = tmp_path / "chromium"  # its profile and crash files, not the user's
    browse = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={home}",
              "--virtual-time-budget=20000"]
    env = {**os.environ, "HOME": str(home)}
    dom = subprocess.run([*browse, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=180,
                         env=env).stdout
    rendered = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # what the app drew, not the data it carries
    studies = json.loads((report.parent / "results/laptop/metrics.json").read_text()).keys() - {"runs"}
    assert studies and all(f">{study}<" in rendered for study in studies), rendered[:2000]
    shot = tmp_path / "report.png"
    subprocess.run([*browse, "--window-size=1280,900", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=180, env=env)
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1280, 900) and len(pixels.getcolors(256)) > 16  # not a blank page
    for name, (study, _) in figures.FIGURES.items():  # every figure of the laptop's studies is in the report's data
        assert study not in studies or f"{name}.png" in dom, name


def test_tracked_sweep_pulled_into_a_fresh_clone_rebuilds_tables_and_figures_without_training(repo, tmp_path):
    grid = {"runs_dir": "results/runs", "results_dir": "results", "figures_dir": "figures", "data_root": "data",
            "seeds": [0], "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml",
                                      "fashion-mnist/vae": "config/recipes/vae-fmnist.yaml"},
            "set": ["train.device=cpu", "train.progress=false", *TINY_PARAMS["laptop"]["set"]],
            "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"],
                                  "methods": ["ce", "icp-adam"]}],
                        "noisy": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                   "scenarios": ["sym0.4"]}],
                        "fewshot": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                     "scenarios": ["5shot"]}],
                        "steps": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["icp-sgd"],
                                   "options": {"steps": [0, 1]}}],
                        "generative": [{"datasets": ["fashion-mnist"], "models": ["vae"],
                                        "methods": ["vae", "icp-adam"]}]}}
    (repo / "sweep.yaml").write_text(yaml.safe_dump(grid))
    smk = ["snakemake", "--profile", "local", "--config", "grid=sweep.yaml", "--cores", "2", "--jobs", "2"]
    sh([*smk, "all"], repo, timeout=900)
    figures = sorted(p.stem for p in (repo / "figures").glob("*.png"))
    from icp import figures as registry

    assert figures == sorted(registry.available(grid["studies"]))  # every figure of the sweep's studies
    assert {"fewshot", "steps", "perturbation", "samples"} <= set(figures) and "tuning" not in figures
    assert all((repo / "figures" / f"{f}.{ext}").stat().st_size > 5_000 for f in figures for ext in ("png", "pdf"))
    for study in ("main", "noisy", "fewshot", "steps"):
        assert "| ce |" in (repo / "results/tables" / f"{study}.md").read_text() or study == "steps"
    generative = (repo / "results/tables/generative.md").read_text()
    assert "Test SSIM (%)" in generative and "| icp-adam |" in generative and "| vae |" in generative
    track = sh([f"{BIN}/icp", "track", "--grid", "sweep.yaml"], repo)
    assert "tracked results/runs (8 run records)" in track.stdout
    sh(["git", "add", "results/runs.dvc", "sweep.yaml"], repo)
    sh(["git", "commit", "-qm", "sweep"], repo)
    records = digest(repo / "results/runs")
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    sh(["dvc", "remote", "modify", "--local", "local", "url", str(repo.parent / "remote")], clone)
    sh(["dvc", "pull", "results/runs.dvc"], clone)
    assert digest(clone / "results/runs") == records
    dry = sh([*smk, "all", "-n"], clone)
    assert "train" not in dry.stdout.split("Job stats:")[-1].split("Reasons:")[0]
    rebuilt = sh([*smk, "all"], clone, timeout=600)
    out = rebuilt.stdout + rebuilt.stderr
    assert "rule train:" not in out and "localrule train:" not in out  # nothing retrained
    assert digest(clone / "results/runs") == records
    assert (clone / "results/tables/main.md").exists() and (clone / "figures/perturbation.png").exists()
    # Snakemake's report bundles every table (rendered as HTML) and figure
    sh([*smk, "all", "--report", "report.zip"], clone, timeout=300)
    import zipfile

    names = zipfile.ZipFile(clone / "report.zip").namelist()
    assert all(any(n.endswith(f"/{f}.png") for n in names) for f in figures), names[:20]
    assert all(any(n.endswith(f"/{s}.html") for n in names)
               for s in ("main", "noisy", "fewshot", "steps", "generative"))


def test_the_train_stage_depends_on_every_module_training_imports():
    """dvc.yaml's train stage lists the code a run depends on instead of all of icp/ (so that a figure's change
    retrains nothing): every icp module that `icp train` and the launcher import, and every method, must be in it."""
    code = ("import sys, icp.cli, icp.engine, icp.launch, icp.pack, icp.grid, icp.methods as m\n"
            "[m.get(name) for name in m.list_methods()]\n"
            "print('\\n'.join(sorted(v.__file__ for k, v in sys.modules.items() if k.split('.')[0] == 'icp')))")
    files = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    used = {str(Path(f).resolve().relative_to(REPO)) for f in files.stdout.split()}
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    missing = [f for f in sorted(used) if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"add to dvc.yaml's train deps: {missing}"
    assert "icp/engine.py" in used and "icp/methods/icp.py" in used  # the probe saw the training code


def test_every_plot_is_a_curve_file_of_the_laptop_grid_drawn_one_line_per_variant(monkeypatch):
    """dvc.yaml's top-level plots: one per condition of config/laptop.yaml, each the file `icp summarize` writes
    for it (icp.results.summary.curve_name) with y its headline metric (top-1; SSIM for the VAE), drawn by the template
    that colours by the file's variant column; a condition added to the grid without its plot fails here."""
    from icp import grid, gridfile
    from icp.results import summary

    monkeypatch.chdir(REPO)
    g = grid.expand(gridfile.load("config/laptop.yaml", apply_params=False), "config/laptop.yaml", check_recipes=False)
    conditions = {(r.dataset, r.model, r.scenario) for r in g.runs.values()}
    expected = {f"results/laptop/curves/{summary.curve_name(*c)}.csv": f"{summary.headline_of(c[1])}_mean"
                for c in conditions}
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plots = {k: v for p in spec["plots"] for k, v in p.items()}
    assert {k: v["y"] for k, v in plots.items()} == expected
    assert all(v["x"] == "epoch" and v["template"] == "variants" for v in plots.values())
    assert "results/laptop/curves" in [next(iter(o)) for o in spec["stages"]["summarize"]["outs"]]
    # dvc metrics show: a file per variant of the committed laptop results, the full tree a plain output beside it
    tree = json.loads((REPO / "results/laptop/metrics.json").read_text())
    assert spec["stages"]["summarize"]["metrics"] == [
        {str(summary.headline_path("results/laptop", v)): {"cache": False}} for v in sorted(summary.headline_files(tree))]
    assert {"results/laptop/metrics.json": {"cache": False}} in spec["stages"]["summarize"]["outs"]
    template = json.loads((REPO / ".dvc/plots/variants.json").read_text())
    assert template["encoding"]["color"]["field"] == "variant" and "<DVC_METRIC_DATA>" in json.dumps(template)


def test_every_tracked_result_and_figure_is_a_dvc_output_or_a_committed_reference():
    """Generated files are committed only as dvc.yaml's outputs (the laptop pipeline) or under results/reference/:
    a test grid's outputs written into results/ or figures/ cannot slip into a commit."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o
            for s in stages.values() for kind in ("outs", "metrics", "plots") for o in s.get(kind, [])]
    allowed = [o.rstrip("/") for o in outs] + ["results/reference"]
    tracked = subprocess.run(["git", "ls-files", "results", "figures"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    dvc_own = {f"{Path(o).parent}/.gitignore" for o in allowed}  # DVC ignores a cached output beside it
    stray = [f for f in tracked if f not in dvc_own and not f.endswith(".dvc")  # a sweep tracked by `icp track`
             and not any(f == a or f.startswith(a + "/") for a in allowed)]
    assert not stray, f"tracked files that no dvc.yaml stage outputs: {stray}"
    assert any(f.startswith("figures/laptop/") for f in tracked)  # the check saw the laptop outputs


def _add_methods(repo: Path, *methods: str) -> None:
    path = repo / "config/laptop.yaml"
    grid_file = yaml.safe_load(path.read_text())
    grid_file["studies"]["main"][0]["methods"] = [*grid_file["studies"]["main"][0]["methods"], *methods]
    grid_file = {k: v for k, v in grid_file.items() if not k.startswith("x-")}
    path.write_text(yaml.safe_dump(grid_file, sort_keys=False))


def test_extending_or_interrupting_dvc_repro_keeps_every_finished_run(repo):
    """persist: true on the train stage's outputs: DVC no longer deletes the runs before the stage runs, so adding a
    method trains its runs alone, and a repro interrupted mid-training keeps what it finished."""
    import signal
    import time

    sh(["dvc", "repro"], repo, timeout=900)  # the laptop results (a no-op after the test above)
    runs = repo / "results/laptop/runs"
    before = {**digest(runs), **digest(runs, "last.pt")}
    selections = digest(repo / "results/laptop/tuning", "selection.json")
    assert before and selections
    try:
        _add_methods(repo, "zipfls")
        sh(["dvc", "repro"], repo, timeout=900)
        after = {**digest(runs), **digest(runs, "last.pt")}
        trained = {k for k in after if after[k] != before.get(k)}
        # the new method's run alone: its record and checkpoint; every other run, byte for byte as it was
        assert {k.split("/")[3] for k in trained} == {"zipfls"} and len(trained) == 2, sorted(trained)
        assert all(after[k] == v for k, v in before.items())
        assert digest(repo / "results/laptop/tuning", "selection.json") == selections
        # interrupt a repro that trains two more runs once one of them is done, then repro again
        _add_methods(repo, "maxsup", "confdist")
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 600
        new = lambda: [p for p in runs.rglob("record.json") if p.parts[-3] in ("maxsup", "confdist")  # noqa: E731
                       and json.loads(p.read_text() or "{}").get("status") == "complete"]
        while time.monotonic() < deadline and not new() and proc.poll() is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        proc.wait(timeout=300)
        finished = {str(p.relative_to(runs)): hashlib.sha256(p.read_bytes()).hexdigest() for p in new()}
        assert finished, "no run finished before the interrupt"
        sh(["dvc", "repro"], repo, timeout=900)
        assert all(hashlib.sha256((runs / k).read_bytes()).hexdigest() == v for k, v in finished.items())
        done = [p for p in runs.rglob("record.json") if p.parts[-3] in ("maxsup", "confdist")]
        assert len(done) == 2 and all(json.loads(p.read_text())["status"] == "complete" for p in done)
        assert "Data and pipelines are up to date" in sh(["dvc", "repro"], repo).stdout
        # a job that only restores a finished run (forced through Snakemake) leaves DVC's view clean: its logs go
        # to the grid's logs_dir, out of the tracked runs, and the record comes back byte for byte from last.pt
        one = next(runs.rglob("record.json"))
        sh([f"{BIN}/snakemake", "--profile", "local", "--config", "grid=config/laptop.yaml", "--cores", "1",
            "--force", str(one.relative_to(repo))], repo, timeout=600)
        assert "up to date" in sh(["dvc", "status"], repo).stdout
        assert not list(runs.rglob("launch.log")) and list((repo / "results/laptop/logs").rglob("launch.log"))
    finally:
        sh(["git", "checkout", "config/laptop.yaml"], repo)
