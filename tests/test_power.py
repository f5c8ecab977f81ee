"""Power by design (icp.power): the printed power holds in simulated Holm families, a study's declared family is
the one Holm runs over, the rest is exploratory, and every table says what its family can detect."""
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from icp import grid, power, stats
from icp.results import cells as cells_mod
from icp.results import frames
from icp.results.tables import write_tables
from icp.config import ConfigError
from tests.conftest import REPO
from tests.test_aggregate import record, write_records

FAMILY = ["icp-adam vs ce", "icp-adam vs icp+steps=0", "icp-adam vs ce+budget=icp-adam"]


def holm_rejections(effects, n, sims, rng, level=0.05):
    """Per comparison, the share of ``sims`` simulated studies (n seed-paired differences of SD 1 each, true means
    ``effects``) in which Holm at ``level`` over the family rejects it, tested as the tables test (paired t)."""
    d = rng.standard_normal((sims, len(effects), n)) + np.asarray(effects)[None, :, None]
    p = sps.ttest_1samp(d, 0.0, axis=2).pvalue
    rejected = np.array([[q < level for q in stats.holm(row)] for row in p])
    return rejected.mean(axis=0)


@pytest.mark.parametrize("n,m", [(5, 3), (3, 1), (7, 4)])
def test_the_printed_power_is_what_holm_gives_in_simulated_families(n, m):
    rng = np.random.default_rng(20261205 + n)
    effect = power.detectable(n, 1.0, m)
    one = holm_rejections([effect] + [0.0] * (m - 1), n, 4000, rng)[0]  # only this comparison has an effect
    assert one == pytest.approx(power.POWER, abs=0.03)
    if m > 1:  # every comparison with the effect: Holm steps down, so the printed power is a lower bound
        assert holm_rejections([effect] * m, n, 4000, rng).min() >= power.POWER - 0.03


def test_detectable_and_seeds_for_invert_each_other_and_two_seeds_detect_nothing():
    assert power.detectable(2, 1.0, 1) == math.inf  # the sign-flip p of 2 pairs is at least 0.5
    assert power.detectable(3, 1.0, 1) == pytest.approx(stats.detectable_difference(3, 1.0, 0.05))
    assert power.detectable(5, 1.0, 3) == pytest.approx(stats.detectable_difference(5, 1.0, 0.05 / 3))
    need = power.seeds_for(1.0, 0.42, 3)
    assert power.detectable(need, 0.42, 3) <= 1.0 < power.detectable(need - 1, 0.42, 3)
    assert power.seeds_for(1e-3, 1.0, 3) is None  # beyond MAX_SEEDS


def test_pooled_sd_weighs_each_comparison_by_its_degrees_of_freedom():
    sd, df = power.pooled_sd([[1.0, 3.0], [0.0, 0.0, 3.0], [5.0]])  # a single pair adds nothing
    assert df == 3 and sd == pytest.approx(math.sqrt((2.0 + 6.0) / 3))
    assert math.isnan(power.pooled_sd([[1.0]])[0])


def spec(tmp_path, primary=None, seeds=(0, 1, 2)):
    out = {"runs_dir": str(tmp_path / "runs"), "seeds": list(seeds),
           "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
           "compute_matched": {"like": "icp-adam"},
           "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"],
                                 "methods": ["ce", "ls", "icp-adam"], "controls": ["alpha_only", "compute_matched"]}]}}
    if primary is not None:
        out["analysis"] = {"primary": {"main": primary}, "targets": {"fashion-mnist": 1.0}}
    return out


def test_a_declared_comparison_must_name_variants_of_its_study(tmp_path):
    with pytest.raises(ConfigError, match=r"'icp-adm' is no variant of study 'main'.*did you mean 'icp-adam'"):
        grid.expand(spec(tmp_path, ["icp-adm vs ce"]), check_recipes=False)
    with pytest.raises(ConfigError, match=r"analysis.primary: unknown study 'mian'"):
        grid.expand({**spec(tmp_path), "analysis": {"primary": {"mian": ["ls vs ce"]}}}, check_recipes=False)
    g = grid.expand(spec(tmp_path, FAMILY), check_recipes=False)
    assert [str(c) for c in power.family(g.analysis, "main", [])] == FAMILY
    assert [str(c) for c in power.family({}, "main", [("ls", "ce"), ("ce", "ce"), ("icp-adam", "ce")])] == [
        "ls vs ce", "icp-adam vs ce"]


# top-1 per variant and seed: icp-adam gains on ce by 1, 2, 3 pp; ls by 4, 5, 3.5 (the best, raw p 0.011: Holm over
# every variant vs ce would make it 0.044 and bold; it is outside the declared family, so exploratory)
TOP1 = {"ce": [0.80, 0.81, 0.82], "ls": [0.84, 0.86, 0.855], "icp-adam": [0.81, 0.83, 0.85],
        "icp+steps=0": [0.80, 0.80, 0.83], "ce+budget=icp-adam": [0.82, 0.81, 0.84]}


def test_tables_holm_over_the_declared_family_only_and_say_what_it_detects(tmp_path):
    g = grid.expand(spec(tmp_path, FAMILY), check_recipes=False)
    write_records(g, lambda run: record(run, TOP1[run.variant][run.seed]))
    runs = frames.runs_frame(g)
    _, md, _, _ = write_tables("main", frames.study_runs(runs, "main"), cells_mod.cells(runs),
                                         tmp_path / "tables", grid=g)
    text = md.read_text()

    def p(variant, against):
        return sps.ttest_rel(np.array(TOP1[variant]) * 100, np.array(TOP1[against]) * 100).pvalue
    raw = [p("icp-adam", "ce"), p("icp-adam", "icp+steps=0"), p("icp-adam", "ce+budget=icp-adam")]
    holm = stats.holm(raw)
    assert f"(n=3, t-test p={raw[0]:.3f}, Holm p={holm[0]:.3f})" in text  # icp-adam vs ce: Holm over the 3
    assert f"t-test p={p('ls', 'ce'):.3f}, exploratory)" in text  # outside the family: raw p, labelled
    assert "**" not in text.split("## Validation")[0]  # ls is best, but exploratory: never bold
    assert "## Primary comparisons" in text and "| icp-adam vs icp+steps=0 |" in text
    diffs = [(np.array(TOP1["icp-adam"]) - np.array(TOP1[b])) * 100 for b in ("ce", "icp+steps=0", "ce+budget=icp-adam")]
    sd = math.sqrt(sum(((d - d.mean()) ** 2).sum() for d in diffs) / 6)
    line = (f"detectable at 80 % power after Holm at 0.05: {power.detectable(3, sd, 3):.2f} pp (SD of paired "
            f"differences {sd:.2f} pp, records: 6 df); a true 1 pp needs {power.seeds_for(1.0, sd, 3)} seeds")
    tables = text.count("\n## ")
    assert tables >= 6 and text.count(line) == tables  # under every table


def test_icp_grid_power_prints_the_family_seeds_and_detectable_difference():
    out = subprocess.run([sys.executable, "-m", "icp", "grid", "--power", "--study", "main"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = next(ln.split() for ln in out.stdout.splitlines() if ln.startswith("main") and "cifar100/resnet20" in ln)
    family, seeds, sd, detectable, target, need = row[2:8]
    assert (family, seeds, target) == ("3", "5", "1.00")
    assert float(detectable) == pytest.approx(power.detectable(5, float(sd), 3), abs=0.006)
    assert int(need) == power.seeds_for(1.0, float(sd), 3) <= 5  # the paper grid's seeds reach its target
