"""The grid: one expansion of config/paper.yaml into run ids and icp configs."""
import collections
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from icp import cli, config, grid, gridfile, naming, records, run_config
from icp.methods.options import teacher_cost, teacher_of, training_cost
from icp.schema import ConfigError, read_yaml
from tests.conftest import REPO

PAPER = REPO / "config" / "paper.yaml"
# the grid file's own lists (its YAML anchors), not copies: a method added there is tested here
PAPER_LISTS = yaml.safe_load(PAPER.read_text())
MAIN_METHODS = set(PAPER_LISTS["x-methods"])
HEADLINE = list(PAPER_LISTS["x-headline"])


@pytest.fixture(scope="module")
def paper():
    return grid.load_expand(PAPER)


def test_paper_grid_has_every_study_and_factor(paper):
    assert list(paper.studies) == list(grid.STUDIES)
    main = paper.select("main")
    by = lambda key, runs: collections.Counter(getattr(r, key) for r in runs)
    assert set(by("method", main)) == MAIN_METHODS | {"icp"} and set(by("seed", main)) == set(range(7))  # icp: K = 0
    assert {(r.dataset, r.model) for r in main} == {("cifar100", "resnet20"), ("cifar10", "resnet20"),
                                                     ("cifar100", "preact_resnet18"),
                                                     ("cifar10", "preact_resnet18"), ("fashion-mnist", "resnet20")}
    moving_sgd = "icp-sgd+reduction=sum+step_size=0.2"  # icp-sgd at a step where the input moves
    # methods, the moving icp-sgd, the α-only control and a FLOP-matched ce per budget of the methods that cost
    # more than 1.1 ce steps; 4 CIFAR conditions at 5 seeds and Fashion-MNIST at 7 (icp grid --power)
    matched = {v for v in by("variant", main) if "+budget=" in v}
    assert {"ce+budget=icp-adam", "ce+budget=mixskd", "ce+budget=aikd"} <= matched
    assert len(main) == (len(MAIN_METHODS) + 1 + 1 + len(matched)) * (4 * 5 + 7)
    for study in ("noisy", "fewshot"):  # the headline studies: only ICP variants whose input moves
        variants = set(by("variant", paper.select(study)))
        assert {"icp-adam", moving_sgd, "icp+steps=0", "ce+budget=icp-adam"} <= variants
        assert not variants & {"icp-sgd", "icp-ademamix"}, study  # the published icp-sgd, icp-ademamix: main only
    assert set(by("scenario", paper.select("noisy"))) == {"sym0.2", "sym0.4", "sym0.6", "asy0.2", "asy0.4"}
    assert set(by("scenario", paper.select("fewshot"))) == {f"{n}shot" for n in (5, 10, 25, 50, 100)}
    steps = {dict(r.options).get("steps", 5) for r in paper.select("steps")}
    assert steps == {0, 1, 2, 3, 5, 10, 20}
    ablation_options = collections.Counter(k for r in paper.select("ablations") for k, _ in r.options)
    assert set(ablation_options) == {"warmup", "step_size", "reduction", "layer_weights", "target_mode"}
    assert "ifgsm" in by("method", paper.select("ablations"))


def test_run_ids_are_unique_readable_and_filesystem_safe(paper):
    ids = list(paper.runs)
    assert len(ids) == len(set(ids))
    for r in paper.runs.values():
        assert re.fullmatch(r"[A-Za-z0-9._+=/-]+", r.run_id) and r.run_dir == f"results/runs/{r.run_id}"
        dataset, model, scenario, variant, seed = r.run_id.split("/")
        assert (dataset, model, scenario, seed) == (r.dataset, r.model, r.scenario, f"s{r.seed}")
        assert variant.split("+")[0] == r.method
        assert all(f"+{k}=" in variant for k, _ in r.options)
    assert paper.runs["cifar100/resnet20/clean/icp-sgd+reduction=sum+step_size=0.01/s2"].options == (
        ("reduction", "sum"), ("step_size", 0.01))


def test_shared_runs_are_trained_once(paper):
    shared = paper.runs["fashion-mnist/resnet20/clean/icp-sgd/s0"]
    assert shared.studies == ("main", "steps", "ablations")  # K = 5, warm-up 0.25, cosine, train mode, mean
    assert "fashion-mnist/resnet20/clean/icp-sgd+steps=5/s0" not in paper.runs
    assert paper.runs["fashion-mnist/resnet20/clean/icp-adam/s0"].studies == ("main", "steps", "ablations")
    # K = 0 refines nothing whatever the input optimizer: the steps study's K = 0 point is main's alpha-only control
    assert paper.runs["fashion-mnist/resnet20/clean/icp+steps=0/s0"].studies == ("main", "steps")
    assert not any("steps=0" in rid and "/icp+" not in rid for rid in paper.runs)
    total = sum(len(ids) for ids in paper.studies.values())
    assert len(paper.runs) < total


def test_aikd_depends_on_the_matching_ce_run(paper):
    for r in paper.runs.values():
        if r.model == "vae":  # FID's feature network: the dataset's clean ce ResNet-20 of seed 0
            (fid,) = r.depends
            assert fid == f"{r.dataset}/resnet20/clean/ce/s0"
            assert f"train.fid_features={paper.runs[fid].run_dir}" in r.overrides
            continue
        if r.method != "aikd":
            assert r.depends == ()
            continue
        (teacher,) = r.depends
        ce = paper.runs[teacher]
        assert (ce.method, ce.dataset, ce.model, ce.scenario, ce.seed) == ("ce", r.dataset, r.model, r.scenario,
                                                                           r.seed)
        assert f"method.options.teacher={ce.run_dir}" in r.overrides
        assert paper.depends_records(r.run_id) == [ce.record]


def test_each_run_config_resolves_to_its_factors(paper):
    seen = set()
    for r in paper.runs.values():
        key = (r.method, r.options, r.scenario[:3], r.dataset)
        if key in seen:
            continue
        seen.add(key)
        cfg = config.load(REPO / r.recipe, list(r.overrides))
        assert (cfg.data.dataset, cfg.model.name, cfg.method.name, cfg.train.seed) == (r.dataset, r.model,
                                                                                      r.method, r.seed)
        assert records.scenario_tag(cfg) == r.scenario
        assert all(cfg.method.options[k] == v for k, v in r.options)
        assert cfg.train.grad_clip == 5  # the grid's `set`, the same for every method
        recipe = yaml.safe_load((REPO / r.recipe).read_text())
        assert cfg.optim.lr == recipe["optim"]["lr"]
        if "budget=" not in r.variant and not r.scenario.endswith("shot"):  # those: tests below
            assert cfg.train.epochs == recipe["train"]["epochs"]


@pytest.mark.parametrize("tag", ["clean", "sym0.2", "asy0.4", "25shot"])
def test_scenario_tags_round_trip(tag):
    cfg = config.resolve({}, naming.parse_scenario(tag))
    assert records.scenario_tag(SimpleNamespace(scenario=cfg.scenario)) == tag


def _grid(tmp_path, **block):
    g = {"recipes": {"fashion-mnist/resnet20": str(REPO / "config/recipes/fmnist-resnet20.yaml")},
         "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"], **block}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


@pytest.mark.parametrize("block, message", [
    ({"scenarios": ["symm0.4"]}, "studies.main.0.scenarios.0: 'symm0.4' is not a scenario: clean, sym<rate> or "
                                 "asy<rate> (label noise, e.g. sym0.4), or <k>shot (e.g. 5shot); did you mean 'sym0.4'?"),
    ({"methods": ["icp-sgd"], "options": {"stepz": [1]}}, "unknown key 'method.options.stepz'"),
    ({"methods": ["icp-sgd"], "options": {"steps": [-1]}}, "method.options.steps"),
    ({"methods": ["ce", "icp-adma"]}, "grid.yaml: studies.main.0.methods.1: method.name: unknown method "
                                      "'icp-adma'; did you mean 'icp-adam'?"),
    ({"models": ["preact_resnet18"]}, "no recipe for fashion-mnist/preact_resnet18"),
    ({"typo": 1}, "studies.main.0: unknown key 'typo'; valid: "),
    ({"scenarios": ["sym04"]}, "'sym04' is not a scenario: clean, sym<rate> or asy<rate> (label noise, e.g. sym0.4), "
                               "or <k>shot (e.g. 5shot); did you mean 'sym0.4'?"),  # never the typo itself
    ({"scenarios": ["5shots"]}, "did you mean '5shot'?"),
])
def test_bad_grids_are_one_line_errors(tmp_path, block, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        grid.load_expand(_grid(tmp_path, **block))
    assert "\n" not in str(err.value)


def test_recipe_with_a_method_section_is_refused(tmp_path):
    path = _grid(tmp_path)
    g = yaml.safe_load(path.read_text())
    g["recipes"]["fashion-mnist/resnet20"] = str(REPO / "config/fmnist-ce.yaml")
    with pytest.raises(ConfigError, match="a recipe has no 'method' section"):
        grid.expand(g)


def test_icp_grid_command_lists_a_study(paper):
    out = subprocess.run([sys.executable, "-m", "icp", "grid", "--study", "steps", "--paths"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    # icp-adam at 7 K (K = 0: the alpha-only control), icp-sgd (sum) at 6, icp-sgd as published; 2 datasets, 3 seeds
    assert out == [r.record for r in paper.select("steps")] and len(out) == (7 + 6 + 1) * 2 * 3


@pytest.mark.parametrize("spec", ["inception", "inception:/weights/inception.pth"])
def test_inception_fid_features_need_no_classifier_run(spec):
    grid_spec = {**read_yaml(REPO / "config" / "laptop.yaml"), "fid_features": spec}
    gridfile.validate_schema(grid_spec)
    g = grid.expand(grid_spec, check_recipes=False)
    vae = [r for r in g.runs.values() if r.model == "vae"]
    assert vae and all(r.depends == () and f"train.fid_features={spec}" in r.overrides for r in vae)
    assert g.studies["generative"] == [r.run_id for r in vae]  # no ce ResNet-20 added to the study


def test_a_study_name_that_no_figure_or_table_knows_is_warned_with_a_suggestion(tmp_path, capsys):
    path = _grid(tmp_path)
    g = yaml.safe_load(path.read_text())
    g["studies"]["nosiy"] = g["studies"].pop("main")
    path.write_text(yaml.safe_dump(g))
    assert cli.main(["grid", "--grid", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: unknown study 'nosiy'" in err and err.splitlines()[0].endswith("did you mean 'noisy'?")
    assert cli.main(["grid", "--grid", str(REPO / "config/paper.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err  # every study of the paper grid is known


def test_a_bad_grid_under_snakemake_is_the_same_one_line_without_a_traceback(tmp_path):
    path = _grid(tmp_path, methods=["icp-adma"])
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", "--config", f"grid={path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and 'File "' not in proc.stderr
    assert f"icp: error: {path}: studies.main.0.methods.0: method.name: unknown method 'icp-adma'" in proc.stderr


def test_a_bad_fid_features_value_is_a_one_line_schema_error():
    with pytest.raises(ConfigError, match=r"^grid: fid_features: 'inceptionv3' is not FID's feature network for generative runs: classifier"):
        gridfile.validate_schema({**read_yaml(REPO / "config" / "laptop.yaml"), "fid_features": "inceptionv3"})



def _resolved(run):
    return config.load(REPO / run.recipe, list(run.overrides)).to_dict()


def _flops(cfg: dict) -> float:
    """A resolved config's training FLOPs in ce epochs, from its method's cost on its model (counted where
    results/reference/flops.csv counts it off the declaration: MixSKD on PreAct ResNet-18 4.96, not 4)."""
    return training_cost(cfg["method"]["name"], cfg["method"]["options"], cfg["train"]["epochs"], cfg["model"]["name"])


def test_main_noisy_and_fewshot_carry_both_controls_with_the_recipe_otherwise(paper):
    for study in ("main", "noisy", "fewshot"):
        runs = paper.select(study)
        conditions = {(r.dataset, r.model, r.scenario, r.seed) for r in runs}
        by_variant = {(r.dataset, r.model, r.scenario, r.seed, r.variant): r for r in runs}
        for d, m, sc, seed in sorted(conditions)[::7]:  # a sample: resolving every config takes a while
            ce = by_variant[d, m, sc, seed, "ce"]
            alpha = by_variant[d, m, sc, seed, "icp+steps=0"]
            matched = by_variant[d, m, sc, seed, "ce+budget=icp-adam"]
            base, a, c = _resolved(ce), _resolved(alpha), _resolved(matched)
            assert a["method"]["name"] == "icp" and a["method"]["options"]["steps"] == 0
            assert {k: v for k, v in a.items() if k != "method"} == {k: v for k, v in base.items() if k != "method"}
            epochs = base["train"]["epochs"]
            ratio = c["train"]["epochs"] / epochs
            assert ratio > 3, (study, d, m)  # icp-adam's K = 5 after a quarter of warm-up: 3.75 x ce
            assert {**c, "train": {**c["train"], "epochs": epochs}, "schedule": base["schedule"]} == base
            milestones = base["schedule"]["milestones"]
            if any(x >= 1 for x in milestones):  # epochs: stretched; fractions stretch with the run by themselves
                assert c["schedule"]["milestones"] == [round(x * ratio) if x >= 1 else x for x in milestones]
            assert c["schedule"]["warmup_epochs"] == pytest.approx(base["schedule"]["warmup_epochs"] * ratio)
    assert naming.variant_label("icp+steps=0").endswith("(α-only control: α-weighted CE, K = 0)")
    assert naming.variant_label("icp+authors_eval_ce=true+steps=0+recipe=authors") == \
        "icp+authors_eval_ce=true+steps=0+recipe=authors"  # a recipe factor: no label (as the α-only control's)
    assert "eval-mode CE" in naming.variant_label("icp+authors_eval_ce=true+steps=0")
    assert "FLOP-matched to icp-adam" in naming.variant_label("ce+budget=icp-adam")


@pytest.mark.parametrize("grid_file", [PAPER, REPO / "config" / "laptop.yaml", REPO / "config" / "reference.yaml"])
def test_every_compute_matched_run_trains_within_two_percent_of_the_flops_it_matches(grid_file):
    """The control's FLOPs (ce epochs) against the declared cost of the run it matches, same cell and seed: a
    control stretched by a step-time ratio (the old 1.27 for ResNet-20) is off by a factor of three and fails."""
    g = grid.load_expand(grid_file)
    controls = [r for r in g.runs.values() if dict(r.factors).get("budget")]
    assert controls
    for r in controls[::3] if len(controls) > 60 else controls:  # a sample: resolving every config takes a while
        like = dict(r.factors)["budget"]
        if like not in {run.method for run in g.runs.values()}:
            continue  # a named run with options (authors-central): test_authors_study_... checks it
        twin = g[r.run_id.replace(f"/{r.variant}/", "/" + re.sub(r"^(ce|vae)\+budget=[^+]+", like, r.variant) + "/")]
        control, matched = _flops(_resolved(r)), _flops(_resolved(twin))
        assert _resolved(r)["method"]["name"] == ("vae" if r.model == "vae" else "ce")
        assert control == pytest.approx(matched, rel=0.02), r.run_id


def test_declared_costs_follow_the_methods_passes():
    assert training_cost("ce", {}, 10) == 10
    assert training_cost("icp-adam", {}, 164) == pytest.approx(41 + 123 * 14 / 3)  # warm-up 41 epochs at 1
    assert training_cost("icp-sgd", {"steps": 10, "warmup": 0.0}, 3) == pytest.approx(3 * 24 / 3)
    assert training_cost("icp-adam", {"steps": 5, "reuse_clean_grad": True, "warmup": 0.0}, 1) == pytest.approx(4)
    assert training_cost("icp", {"steps": 0}, 7) == 7  # the alpha-only control costs a ce run
    assert training_cost("cskd", {}, 3) == pytest.approx(4) and training_cost("aikd", {}, 3) == pytest.approx(7)  # + the ce teacher
    assert (teacher_of("aikd"), teacher_of("cskd"), teacher_cost("aikd", 3), teacher_cost("cskd", 3)) == ("ce", None, 3, 0)


def test_authors_study_trains_their_protocol_beside_ours(paper):
    """Their model, recipe and objective at one seed: ce, byot, both controls, their eval-mode CE term on and off
    at their central point (and on the alpha-only control), and their sweep one factor at a time around it."""
    runs = paper.select("authors")
    theirs = "+authors_eval_ce=true"
    assert {r.variant for r in runs} == {
        "ce+recipe=authors", "byot+recipe=authors",
        "icp+steps=0+recipe=authors",  # controls: α-only, and ce given the FLOPs of their central point and its K 10
        "ce+budget=authors-central+recipe=authors", "ce+budget=authors-k10+recipe=authors",
        f"icp{theirs}+steps=0+recipe=authors",
        *(f"icp-adam{e}+step_size=0.0003+recipe=authors" for e in ("", theirs)),  # icp-sgd at 3e-4 barely moves
        *(f"icp-adam{theirs}+step_size=0.0003+warmup={w}+recipe=authors" for w in ("0", "0.5", "0.75")),
        f"icp-adam{theirs}+step_size=0.0003+steps=10+recipe=authors",
        f"icp-adam{theirs}+layer_weights=uniform+step_size=0.0003+recipe=authors"}
    assert {r.seed for r in runs} == {0} and {(r.dataset, r.model) for r in runs} == {("cifar100", "resnet50_cifar")}
    on = _resolved(next(r for r in runs if r.variant == f"icp-adam{theirs}+step_size=0.0003+recipe=authors"))
    off = _resolved(next(r for r in runs if r.variant == "icp-adam+step_size=0.0003+recipe=authors"))
    for cfg in (on, off):
        assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["weight_decay"]) == ("adamw", 3e-4, 0.0)
        assert (cfg["data"]["augment"], cfg["train"]["epochs"], cfg["train"]["batch_size"]) == ("randaugment", 100, 32)
        assert cfg["schedule"]["name"] == "constant" and cfg["train"]["grad_clip"] == 5
        assert cfg["data"]["val_fraction"] == 0.1
        assert cfg["model"] == {"name": "resnet50_cifar", "options": {"stem": "authors"}}
        assert (cfg["method"]["options"]["step_size"], cfg["method"]["options"]["warmup"]) == (3e-4, 0.25)
    assert (on["method"]["options"]["authors_eval_ce"], off["method"]["options"]["authors_eval_ce"]) == (True, False)
    assert not set(r.run_id for r in runs) & set(r.run_id for r in paper.select("main"))  # never our recipe's runs
    by_variant = {r.variant: r for r in runs}
    for name, matched in (("authors-central", f"icp-adam{theirs}+step_size=0.0003+recipe=authors"),
                          ("authors-k10", f"icp-adam{theirs}+step_size=0.0003+steps=10+recipe=authors")):
        control = _resolved(by_variant[f"ce+budget={name}+recipe=authors"])
        assert control["method"]["name"] == "ce"
        assert _flops(control) == pytest.approx(_flops(_resolved(by_variant[matched])), rel=0.02)


def test_a_compute_matched_control_without_its_method_is_one_line(tmp_path):
    spec = {"runs_dir": "runs", "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
            "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"],
                                  "controls": ["compute_matched"]}]}}
    with pytest.raises(ConfigError, match=r"compute_matched needs a 'compute_matched' section \(like: METHOD"):
        grid.expand(spec, "g.yaml", check_recipes=False)


def test_few_shot_runs_get_the_same_optimizer_steps_whatever_the_shots(paper):
    from icp import data

    budget = gridfile.load(PAPER)["studies"]["fewshot"][0]["optimizer_steps"]
    seen = {}
    for r in paper.select("fewshot"):
        if r.seed != 0 or r.method not in ("ce", "icp-adam", "icp"):
            continue
        cfg = config.load(REPO / r.recipe, list(r.overrides))
        per_epoch = -(-cfg.scenario.shots * data.INFO[r.dataset].num_classes // cfg.train.batch_size)
        steps = cfg.train.epochs * per_epoch
        if "budget=" in r.variant:  # the compute-matched ce: the ICP budget times the cost ratio
            continue
        assert budget[r.dataset] <= steps < budget[r.dataset] + per_epoch, (r.run_id, steps)
        assert cfg.train.eval_every == max(1, cfg.train.epochs // 50)
        seen.setdefault((r.dataset, r.scenario), set()).add(cfg.train.epochs)
    assert len(seen) == 10 and all(len(e) == 1 for e in seen.values())  # one length per cell, for every method
    assert seen["cifar100", "5shot"] == {3239} and seen["cifar100", "100shot"] == {164}


def test_refinement_studies_run_on_variants_that_move_the_input(paper, tiny_cfg, tmp_path):
    """The steps study and every ablation block (but the one sweeping icp-sgd's step size and reduction) run on a
    refinement whose input shift, recorded by a short real run on Fashion-MNIST, is at least 10x that of the
    authors' icp-sgd default (η 0.002 on the batch-mean loss), which moves each image by ~1e-6."""
    from icp import engine

    spec = gridfile.load(PAPER)
    refinements = set()
    for study in ("steps", "ablations"):
        for block in spec["studies"][study]:
            options = block.get("options", {})
            if block["methods"] == ["icp-sgd"] and not options:
                continue  # the published point, kept to show that it barely moves
            if len(options.get("step_size", [])) > 1 and len(options.get("reduction", [])) > 1:
                continue  # the sweep that shows where icp-sgd starts to move
            for method in block["methods"]:
                fixed = {k: v[0] for k, v in options.items() if k in ("step_size", "reduction") and len(v) == 1}
                refinements.add((method, tuple(sorted(fixed.items()))))
    assert {m for m, _ in refinements} == {"icp-adam", "icp-sgd", "ifgsm"}

    def shift(method, options=()):
        sets = [f"method.name={method}", "method.options.warmup=0", "train.epochs=1",
                *(f"method.options.{k}={v}" for k, v in options)]
        out = tmp_path / "-".join([method, *(f"{k}{v}" for k, v in options)])
        return engine.Trainer(tiny_cfg(*sets), out).run()["epochs"][-1]["diagnostics"]["input_shift"]

    published = shift("icp-sgd")
    moved = {r: shift(*r) for r in sorted(refinements)}
    print(f"input shift after one epoch: icp-sgd as published {published:.1e}; "
          + ", ".join(f"{m}{dict(o)} {v:.1e}" for (m, o), v in moved.items()))
    assert all(v >= 10 * published for v in moved.values()), (published, moved)


@pytest.mark.parametrize("grid_file", [PAPER, REPO / "config" / "laptop.yaml"])
def test_every_classifier_run_has_the_same_validation_split_within_its_cell(grid_file):
    """Every classifier run holds out 10 % of its training pool for validation, with one split seed for every
    method and seed, so best epochs and ablation choices are made on the same images (never on test)."""
    from icp import model_registry

    g = grid.load_expand(grid_file)
    trees = {}
    for r in g.runs.values():
        if r.model in model_registry.GENERATIVE:
            continue
        key = (r.recipe, tuple(o for o in r.overrides if o.startswith("data.")))
        if key not in trees:
            trees[key] = run_config.resolve(r.recipe, r.overrides).data
        data = trees[key]
        assert data.val_fraction == pytest.approx(0.1) and data.split_seed == 0, r.run_id


def test_the_tuned_study_tunes_the_headline_methods_equally_and_every_trial_builds(paper):
    """config/paper.yaml's `tuned` study: CIFAR-100 ResNet-20 clean, the headline methods, 5 trials each at seed 100
    from a space whose keys are real config keys (every trial's and final's config resolves to its draws), finals
    at seeds 0-2; every other study keeps its runs."""
    assert [c.method for c in paper.tuned] == HEADLINE
    spec = gridfile.load(PAPER)
    for cell in paper.tuned:
        assert (cell.study, cell.dataset, cell.model, cell.scenario, cell.seeds) == (
            "tuned", "cifar100", "resnet20", "clean", (0, 1, 2))
        assert len(cell.trials) == 5 and all(paper[rid].seed == 100 for rid in cell.trials)
        space = spec["tuning"]["spaces"][cell.method]
        assert {"optim.lr", "optim.weight_decay"} <= set(space) and all(r.get("source") for r in space.values())
        for t, (rid, setting) in enumerate(zip(cell.trials, cell.settings)):
            for run in (paper[rid], *paper.finals(cell, t)):
                cfg = config.load(REPO / run.recipe, list(run.overrides)).to_dict()
                for key, value in setting.items():
                    section, name = key.rsplit(".", 1)
                    node = cfg
                    for part in section.split("."):
                        node = node[part]
                    assert node[name] == value, (run.run_id, key)
    trials = [rid for rid in paper.studies["tuned"] if "+trial=" in rid]
    # + the defaults at the finals' seeds, + AI-KD's ce teacher at the trials' seed
    assert len(trials) == len(HEADLINE) * 5 and len(paper.studies["tuned"]) == len(HEADLINE) * (5 + 3) + 1
    assert "cifar100/resnet20/clean/ce/s100" in paper.studies["tuned"]
    assert not any("+trial=" in rid for s, ids in paper.studies.items() if s != "tuned" for rid in ids)


def test_a_key_typo_in_a_study_block_names_the_nearest_key(tmp_path):
    g = {"recipes": {"fashion-mnist/resnet20": str(REPO / "config/recipes/fmnist-resnet20.yaml")},
         "studies": {"main": [{"datasets": ["fashion-mnist"], "model": ["resnet20"], "methods": ["ce"]}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    with pytest.raises(ConfigError) as exc:
        grid.load_expand(path)
    assert str(exc.value).endswith("studies.main.0: unknown key 'model'; did you mean 'models'?"), str(exc.value)


def test_a_suggestion_is_never_the_word_itself_and_comes_from_its_slot():
    from icp.schema import nearest

    assert nearest("sym04", ["sym04", "sym0.4"]) == "sym0.4"  # the word itself is never suggested
    assert nearest("mian", ["main", "noisy", "fewshot"]) == "main"
    assert nearest("zzzz", ["main", "noisy"]) is None
    # another case of a valid word gets that word, not a longer one it shares a run with
    assert nearest("ICP-adam", ["icp-adam", "icp-ademamix", "icp-sgd"]) == "icp-adam"
    assert naming.scenario_spellings("sym04") == ["clean", "sym0.4"]


def test_every_method_that_costs_more_than_ce_gets_a_flop_matched_control_and_the_vae_its_own(tmp_path):
    block = {"datasets": ["fashion-mnist"], "models": ["resnet20"], "controls": ["compute_matched"],
             "methods": ["ce", "ls", "cskd", "mixskd", "icp-adam", "icp-sgd"]}
    spec = {"runs_dir": str(tmp_path / "runs"), "seeds": [0],
            "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml",
                        "fashion-mnist/vae": "config/recipes/vae-fmnist.yaml"},
            "compute_matched": {"like": "icp-adam"},
            "studies": {"main": [{**block, "compute_matched": {"above": 1.1}}], "noisy": [block],
                        "generative": [{"datasets": ["fashion-mnist"], "models": ["vae"], "methods": ["vae", "icp-adam"],
                                        "controls": ["alpha_only", "compute_matched"]}]}}
    g = grid.expand(spec, check_recipes=False)
    matched = lambda study: sorted(r.variant for r in g.select(study) if "+budget=" in r.variant)  # noqa: E731
    # ls costs ce's; icp-sgd trains the epochs icp-adam's control does: that control serves both
    assert matched("main") == ["ce+budget=cskd", "ce+budget=icp-adam", "ce+budget=mixskd"]
    assert matched("noisy") == ["ce+budget=icp-adam"]  # the grid's own matching where the block has none
    assert matched("generative") == ["vae+budget=icp-adam"]
    vae_control = next(r for r in g.select("generative") if "+budget=" in r.variant)
    cfg = _resolved(vae_control)
    assert cfg["method"]["name"] == "vae" and cfg["train"]["epochs"] == round(_flops(_resolved(
        g[vae_control.run_id.replace("vae+budget=icp-adam", "icp-adam")])))
    assert "icp+steps=0" in {r.variant for r in g.select("generative") if r.model == "vae"}
    assert naming.variant_label("vae+budget=icp-adam") == "vae+budget=icp-adam (vae, FLOP-matched to icp-adam)"


def test_the_sweeps_first_line_counts_runs_as_icp_status_does_with_the_finals_yet_to_be_chosen(tmp_path):
    from icp import grid as grid_mod

    g = grid_mod.load_expand(REPO / "config" / "paper.yaml", check_recipes=False)
    pending = sum(len(c.seeds) for c in g.tuned if g.chosen(c) is None)
    line = grid_mod.run_count_line(g, {"a", "b", "c"})
    assert pending > 0 and line.startswith(f"icp: {g.source}: {len(g.runs) + pending} runs, {pending} of them")
    assert "this call trains 3" in line and "icp status --watch" in line


def test_a_grid_file_not_found_names_the_nearest_one_beside_it():
    with pytest.raises(ConfigError) as exc:
        gridfile.load(REPO / "config" / "lapop.yaml")
    assert str(exc.value).endswith(f"did you mean '{REPO / 'config' / 'laptop.yaml'}'?"), str(exc.value)
