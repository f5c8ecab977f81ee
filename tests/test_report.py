import json

import pytest

from icp import cli, config, engine
from icp.results import report


def test_summary_averages_seeds_of_one_condition_only(tiny_cfg, tmp_path, capsys):
    recs = {}
    for method, seed in (("ce", 0), ("ce", 1), ("ls", 0)):
        cfg = tiny_cfg("train.epochs=1", "data.train_subset=200", "data.test_subset=100", f"method.name={method}",
                       f"train.seed={seed}")
        recs[method, seed] = engine.Trainer(cfg, tmp_path / "runs" / f"{method}-{seed}").run()
    engine.Trainer(tiny_cfg("train.epochs=2", "data.train_subset=200", "data.test_subset=100"),
                   tmp_path / "runs" / "unfinished").run(max_epochs=1)
    table = report.summary([tmp_path / "runs"])
    assert len(table) == 2  # ce (2 seeds), ls (1 seed); the unfinished run is left out
    ce = table[table.variant == "ce"].iloc[0]
    tops = [recs["ce", s]["last"]["test"]["top1"] for s in (0, 1)]
    assert ce.n == 2 and ce.top1_mean == pytest.approx(sum(tops) / 2)
    assert ce.top1_std == pytest.approx(abs(tops[0] - tops[1]) / 2 ** 0.5)
    assert len(report.summary([tmp_path / "runs"], include_incomplete=True)) == 3  # 2 epochs is another condition
    assert cli.main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "| fashion-mnist | resnet20 | clean | ce | 1 | 2 |" in out and "±" in out


def write_record(root, name, method, seed, top1, *overrides):
    """A complete one-epoch record of the config that ``overrides`` resolve to, under ``root/name``."""
    cfg = config.resolve({}, [f"method.name={method}", f"train.seed={seed}", "train.epochs=1", *overrides]).to_dict()
    test = {"top1": top1, "macro_f1": top1, "ece": 0.1}
    rec = {"run_id": name, "status": "complete", "error": None, "dataset": cfg["data"]["dataset"],
           "model": cfg["model"]["name"], "method": method, "method_options": cfg["method"]["options"], "seed": seed,
           "config": cfg, "epochs": [{"epoch": 1, "images": 500, "time_s": 1.0, "test": test}],
           "last": {"epoch": 1, "test": test}, "best": None, "wall_time_s": 2.0, "compute_s": 2.0,
           "images_per_s": 500.0, "env": {"device": "cpu"}, "jobs": [{"job_id": None, "seconds": 2.0}]}
    (root / name).mkdir(parents=True)
    (root / name / "record.json").write_text(json.dumps(rec))


def test_summary_averages_only_runs_that_differ_by_seed(tmp_path):
    a, b = ["data.train_subset=500", "optim.lr=0.1"], ["data.train_subset=300", "optim.lr=0.01"]
    write_record(tmp_path, "ce-a0", "ce", 0, 0.15, *a, "data.root=/x")
    write_record(tmp_path, "ce-a1", "ce", 1, 0.17, *a, "data.root=/y", "data.num_workers=4", "scenario.seed=1")
    write_record(tmp_path, "ce-b0", "ce", 0, 0.06, *b)  # same seed as ce-a0, another config: not a second seed
    write_record(tmp_path, "ls-a0", "ls", 0, 0.18, *a)
    write_record(tmp_path, "ls-a1", "ls", 1, 0.19, *a)
    table = report.summary([tmp_path])
    ce = table[table.variant == "ce"].set_index("n")
    assert sorted(ce.index) == [1, 2] and ce.loc[2, "top1_mean"] == pytest.approx(0.16)
    assert ce.loc[1, "top1_mean"] == pytest.approx(0.06) and ce.config_key.nunique() == 2
    ls = table[table.variant == "ls"].iloc[0]  # compared with the ce runs of its own settings only
    assert ls.pairs == 2 and ls.delta == pytest.approx(0.025)
    text = report.markdown(table)
    assert "| config |" in text and f"| ce | 1 | {ce.loc[1, 'config_key']} | 1 | 6.00 |" in text


def test_report_of_vae_runs_shows_the_generative_metrics_and_names_the_compared_one(tmp_path, capsys):
    for method, seed, ssim in (("vae", 0, 0.40), ("vae", 1, 0.42), ("icp-adam", 0, 0.45), ("icp-adam", 1, 0.48)):
        cfg = config.resolve({}, [f"method.name={method}", f"train.seed={seed}", "train.epochs=1",
                                  "model.name=vae"]).to_dict()
        test = {"ssim": ssim, "fid_recon": 30.0, "fid_prior": 60.0, "elbo": 250.0, "recon": 240.0, "kl": 10.0}
        rec = {"run_id": f"{method}-{seed}", "status": "complete", "error": None, "dataset": "fashion-mnist",
               "model": "vae", "method": method, "method_options": cfg["method"]["options"], "seed": seed,
               "config": cfg, "epochs": [{"epoch": 1, "images": 500, "time_s": 1.0, "test": test}],
               "last": {"epoch": 1, "test": test}, "best": None, "wall_time_s": 1.0, "compute_s": 1.0,
               "images_per_s": 500.0, "env": {"device": "cpu"}, "jobs": [{"job_id": None, "seconds": 1.0}]}
        (tmp_path / rec["run_id"]).mkdir()
        (tmp_path / rec["run_id"] / "record.json").write_text(json.dumps(rec))
    assert cli.main(["report", str(tmp_path)]) == 0
    head, _, *rows = capsys.readouterr().out.splitlines()
    assert "| ssim | fid_recon | elbo | Δ ssim vs baseline" in head and "top1" not in head
    icp_row = next(r for r in rows if "| icp-adam |" in r)
    assert "46.50 ± 2.12" in icp_row and "+5.50" in icp_row  # SSIM in %, difference to vae in points


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells, split on the pipes that are not escaped."""
    import re

    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def test_a_report_of_classifiers_and_a_vae_is_a_valid_markdown_table(tmp_path):
    """One table that compares top-1 for the classifiers and SSIM for the VAE: every row has the header's columns
    (the comparison's name once joined two metrics with a pipe, and the header had one column more)."""
    write_record(tmp_path, "ce-0", "ce", 0, 0.50)
    write_record(tmp_path, "ce-1", "ce", 1, 0.52)
    for method, seed in (("vae", 0), ("vae", 1)):
        write_record(tmp_path, f"{method}-{seed}", method, seed, 0.0, "model.name=vae")
    lines = report.markdown(report.summary([tmp_path])).splitlines()
    head, rule, *rows = lines
    assert "top1" in head and "ssim" in head and rows
    assert set(_cells(rule)) == {"---"}
    assert {len(_cells(line)) for line in lines} == {len(_cells(head))}, lines


def test_a_flop_matched_control_is_compared_with_the_baseline_at_its_own_length(tmp_path):
    """As the study tables do: ce+budget=icp-adam (ce trained 3x longer) against ce at ce's length, its row showing
    the epochs it trained."""
    cell = "fashion-mnist/resnet20/clean"
    for seed, base, long in ((0, 0.50, 0.70), (1, 0.54, 0.71), (2, 0.52, 0.75)):
        write_record(tmp_path, f"{cell}/ce/s{seed}", "ce", seed, base)
        write_record(tmp_path, f"{cell}/ce+budget=icp-adam/s{seed}", "ce", seed, long, "train.epochs=3")
    table = report.summary([tmp_path]).set_index("variant")
    control = table.loc["ce+budget=icp-adam"]
    assert control.epochs == 3 and table.loc["ce", "epochs"] == 1
    assert control.pairs == 3 and control.delta == pytest.approx(0.20)
