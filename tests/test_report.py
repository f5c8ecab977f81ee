import pytest

from icp import cli, engine, report


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
