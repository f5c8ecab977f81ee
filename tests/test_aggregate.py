"""Aggregation of known records gives known cells, p-values, tables and run-by-run reports (icp.aggregate)."""
import json
import math
import os
import shutil
import subprocess

import pytest

from icp import aggregate, grid

TOP1 = {"ce": [0.80, 0.82, 0.84], "ls": [0.83, 0.84, 0.88], "pskd": [0.81, 0.80, 0.86]}


def record(run, top1, status="complete", error=None, images_per_s=1000.0, device="cuda", work=None,
           compute_s=1800.0, attempts=1):
    """A record of the current schema; ``work``: (images, seconds) per epoch, default 1000 images per epoch at
    ``images_per_s``; ``attempts`` jobs share ``compute_s``."""
    test = {"top1": top1, "macro_f1": top1 - 0.01, "ece": 0.05, "nll": 0.5} if top1 is not None else None
    work = work or [(1000, 1000 / images_per_s)] * (2 if test else 0)
    epochs = [{"epoch": i + 1, "images": images, "time_s": seconds, "images_per_s": images / seconds,
               "test": {**test, "top1": top1 - 0.1 * (i + 1 < len(work))} if test else None}
              for i, (images, seconds) in enumerate(work)]
    return {"run_id": run.run_id, "status": status, "error": error, "dataset": run.dataset, "model": run.model,
            "method": run.method, "method_options": {}, "seed": run.seed,
            "config": {"scenario": {"kind": "clean", "seed": run.seed}, "train": {"epochs": 2, "seed": run.seed},
                       "data": {"root": f"/data/{run.seed}"}, "method": {"name": run.method, "options": {}}},
            "epochs": epochs, "last": {"epoch": 2, "test": test} if test else None, "best": None,
            "wall_time_s": 1800.0, "images_per_s": images_per_s, "compute_s": compute_s,
            "env": {"device": device, "device_name": "H100"}, "code": {"version": "0.1.0", "git_commit": "abc"},
            "jobs": [{"job_id": str(100 + run.seed + 10 * i), "seconds": compute_s / attempts} for i in range(attempts)]}


def write_records(g, make) -> None:
    """``make(run)``'s record (None: none) into every run directory of grid ``g``."""
    for run in g.runs.values():
        rec = make(run)
        if rec is not None:
            os.makedirs(run.run_dir)
            with open(os.path.join(run.run_dir, "record.json"), "w") as f:
                json.dump(rec, f)


def expand(tmp_path, methods, seeds=(0, 1, 2), **blocks):
    """A one-study grid (``main``) on fashion-mnist/resnet20; ``blocks``: method -> its own seeds."""
    block = {"datasets": ["fashion-mnist"], "models": ["resnet20"]}
    spec = {"runs_dir": str(tmp_path / "runs"), "seeds": list(seeds),
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "studies": {"main": [{**block, "methods": list(methods)},
                                 *({**block, "methods": [m], "seeds": s} for m, s in blocks.items())]}}
    return grid.expand(spec, check_recipes=False)


@pytest.fixture
def sweep(tmp_path):
    g = expand(tmp_path, ["ce", "ls", "pskd", "tfkd"])

    def make(run):
        if run.method in TOP1:
            return record(run, TOP1[run.method][run.seed], images_per_s=1000.0 if run.method == "ce" else 500.0)
        if run.seed == 0:
            return record(run, None, status="failed", error="DataError: no data")
        if run.seed == 2:
            return record(run, None, status="diverged", error="Diverged: loss is nan at epoch 1, step 3 of 9")
        return None

    write_records(g, make)
    return g


def test_cells_give_exact_means_stds_and_paired_p_values(sweep):
    runs = aggregate.runs_frame(sweep)
    assert len(runs) == 12 and sorted(runs.status.unique()) == ["complete", "diverged", "failed", "missing"]
    cells = aggregate.cells(runs).set_index("variant")
    assert cells.loc["ce", "top1_mean"] == pytest.approx(0.82)
    assert cells.loc["ce", "top1_std"] == pytest.approx(0.02)
    assert cells.loc["ls", "top1_std"] == pytest.approx(math.sqrt(7e-4))
    assert cells.loc["ls", "best_top1_mean"] == pytest.approx(0.85)  # best epoch = last one here
    # differences 0.03, 0.02, 0.04: t = 0.03 / (0.01 / sqrt 3) = 3 sqrt 3 with 2 degrees of freedom, whose
    # two-sided p is 1 - t / sqrt(2 + t^2)
    t = 3 * math.sqrt(3)
    assert cells.loc["ls", "delta"] == pytest.approx(0.03) and cells.loc["ls", "delta_of"] == "top1"
    p = 1 - t / math.sqrt(2 + t * t)
    assert cells.loc["ls", "p_value"] == pytest.approx(p, rel=1e-9) and cells.loc["ls", "t_stat"] == pytest.approx(t)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t quantile 0.975 at 2 dof x the standard error
    assert (cells.loc["ls", "ci_low"], cells.loc["ls", "ci_high"]) == (pytest.approx(0.03 - half),
                                                                       pytest.approx(0.03 + half))
    assert cells.loc["ls", "p_holm"] == pytest.approx(2 * p)  # the smaller of two p-values (ls, pskd) doubles
    assert cells.loc["pskd", "p_holm"] == pytest.approx(cells.loc["pskd", "p_value"])  # the larger stays
    assert cells.loc["ls", "pairs"] == 3 and cells.loc["ls", "speed_vs_baseline"] == pytest.approx(0.5)
    assert (cells.loc["tfkd", "n"], cells.loc["tfkd", "diverged"], cells.loc["tfkd", "not_final"]) == (0, 1, 2)
    assert math.isnan(cells.loc["tfkd", "top1_mean"])  # the diverged run is never averaged in
    assert cells.loc["ce", "gpu_hours"] == pytest.approx(1.5)
    assert cells.loc["tfkd", "gpu_hours"] == pytest.approx(1.0) and cells.loc["tfkd", "attempts"] == 2  # failed too
    assert runs.config_key.nunique() == 4  # one per method: the seeds of a grid cell share their config key


def test_study_tables_bold_the_best_and_list_runs_not_averaged(sweep, tmp_path):
    runs = aggregate.runs_frame(sweep)
    csv, md, tex = aggregate.write_tables("main", aggregate.study_runs(runs, "main"), aggregate.cells(runs),
                                          tmp_path / "tables")
    text = md.read_text()
    assert "| ls | **85.00 ± 2.65 (3)** |" in text and "| ce | 82.00 ± 2.00 (3) |" in text
    assert "| ls | **+3.00 [+0.52, +5.48] (3, p=0.035, Holm p=0.070)** |" in text
    assert "| tfkd | – (0/3, 1 diverged, 1 failed, 1 missing) |" in text
    tfkd = sorted(r.run_id for r in sweep.runs.values() if r.method == "tfkd")
    assert f"- failed: {tfkd[0]} (DataError: no data)" in text and f"- missing: {tfkd[1]}" in text
    assert f"- diverged: {tfkd[2]}" in text
    assert "| ce | 1,000 | 1.00 | 1.50 | 1.50 | – | 3 | 3 |" in text and "| ls | 500 | 0.50 | 1.50 |" in text
    assert "| tfkd | – | – | 1.00 | 1.00 | – | 2 | 0 |" in text  # the failed and the diverged run cost too
    assert r"\textbf{85.00 $\pm$ 2.65 (3)}" in tex.read_text() and r"\toprule" in tex.read_text()
    import pandas as pd

    assert set(pd.read_csv(csv).variant) == {"ce", "ls", "pskd", "tfkd"}


def test_latex_tables_compile(sweep, tmp_path):
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing: .ci/run installs texlive-latex-recommended")
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended)")
    runs = aggregate.runs_frame(sweep)
    _, _, tex = aggregate.write_tables("main", runs, aggregate.cells(runs), tmp_path)
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n\\input{main.tex}\n"
                   "\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_generative_study_tables_compare_ssim_with_vae(tmp_path):
    spec = {"runs_dir": str(tmp_path / "runs"), "seeds": [0, 1, 2],
            "recipes": {"fashion-mnist/vae": "config/recipes/vae-fmnist.yaml",
                        "fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "studies": {"generative": [{"datasets": ["fashion-mnist"], "models": ["vae"],
                                        "methods": ["vae", "icp-adam"]}]}}
    g = grid.expand(spec, check_recipes=False)
    assert len(g.runs) == 7  # + the ce ResNet-20 run whose features FID uses
    ssim = {"vae": [0.50, 0.52, 0.54], "icp-adam": [0.53, 0.54, 0.58]}
    for run in g.runs.values():
        rec = record(run, 0.8 if run.method == "ce" else None)
        if run.model == "vae":
            s = ssim[run.method][run.seed]
            rec["last"] = {"epoch": 2, "test": {"ssim": s, "fid_recon": 10 * (1 - s), "fid_prior": 50.0,
                                                "elbo": -100 * (1 - s), "recon": 80.0, "kl": 20.0}}
            rec["epochs"] = [{"epoch": 2, "test": rec["last"]["test"]}]
        (tmp_path / "runs" / run.run_id).mkdir(parents=True)
        (tmp_path / "runs" / run.run_id / "record.json").write_text(json.dumps(rec))
    runs = aggregate.runs_frame(g)
    cells = aggregate.cells(runs).set_index("variant")
    assert cells.loc["icp-adam", "delta"] == pytest.approx(0.03) and cells.loc["icp-adam", "delta_of"] == "ssim"
    t = 3 * math.sqrt(3)
    assert cells.loc["icp-adam", "p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    _, md, tex = aggregate.write_tables("generative", aggregate.study_runs(runs, "generative"),
                                        aggregate.cells(runs), tmp_path / "tables")
    text = md.read_text()
    assert "| icp-adam | **55.00 ± 2.65 (3)** |" in text and "| vae | 52.00 ± 2.00 (3) |" in text
    assert "| icp-adam | **4.50 ± 0.26 (3)** |" in text  # FID of reconstructions: lower is better
    assert "SSIM difference to vae" in text
    assert "| icp-adam | **+3.00 [+0.52, +5.48] (3, p=0.035, Holm p=0.035)** |" in text  # one test: Holm = p
    assert "compares runs of this project only" in text  # the records name no Inception network

    for path in (tmp_path / "runs").rglob("record.json"):  # the same runs, FID from Inception-v3
        rec = json.loads(path.read_text())
        if rec["model"] == "vae":
            rec["fid_features"] = "inception-v3 pool3 2048 (torch-fidelity weights /w.pth)"
            path.write_text(json.dumps(rec))
    runs = aggregate.runs_frame(g)
    _, md, _ = aggregate.write_tables("generative", aggregate.study_runs(runs, "generative"), aggregate.cells(runs),
                                      tmp_path / "tables")
    assert "features: Inception-v3 (torch-fidelity), as published FIDs" in md.read_text()
    assert "project only" not in md.read_text()


def test_figures_from_the_same_records_are_byte_identical(sweep, tmp_path):
    from icp import figures

    runs = aggregate.runs_frame(sweep)
    epochs = aggregate.epochs_frame(runs)
    first = figures.make("learning_curves", runs, epochs, tmp_path / "a")
    second = figures.make("learning_curves", runs, epochs, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert b"/CreationDate" not in first[1].read_bytes()  # else two renderings a second apart differ
    assert [p.suffix for p in first] == [".png", ".pdf"] and first[0].stat().st_size > 5_000
