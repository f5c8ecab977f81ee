import dataclasses

import pytest

from icp import config
from icp.schema import ConfigError
from tests.conftest import REPO


def test_defaults_resolve_with_every_key():
    cfg = config.resolve()
    d = cfg.to_dict()
    assert d["data"]["dataset"] == "fashion-mnist"
    assert d["method"]["options"] == {}  # ce takes none
    assert d["model"]["options"] == {"shortcut": "A"}  # defaults filled in


def test_override_nested_and_types():
    cfg = config.resolve({}, ["train.epochs=7", "optim.lr=1e-2", "schedule.milestones=[3, 5]",
                              "method.name=ls", "method.options.epsilon=0.2", "data.val_fraction=0.1"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.01 and cfg.schedule.milestones == [3, 5]
    assert cfg.method.options == {"epsilon": 0.2} and cfg.data.val_fraction == 0.1
    assert isinstance(config.resolve({}, ["optim.lr=1"]).optim.lr, float)  # int accepted for float


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=3"], "unknown key 'train.epoch'; did you mean 'epochs'?"),
    (["trian.epochs=3"], "unknown key 'trian'; did you mean 'train'?"),
    (["train.epochs=3.5"], "train.epochs: expected an integer, got 3.5"),
    (["train.epochs=0"], "train.epochs: expected an integer >= 1, got 0"),
    (["train.bf16=maybe"], "train.bf16: expected true or false, got 'maybe'"),
    (["optim.name=adam"], "optim.name: expected one of 'sgd', 'adamw', got 'adam'"),
    (["scenario.noise_rate=1.5"], "scenario.noise_rate: expected a number in [0, 1), got 1.5"),
    (["scenario.kind=fewshot"], "scenario.shots: expected a positive integer when scenario.kind is 'fewshot'"),
    (["scenario.kind=noisy"], "scenario.noise_rate: expected a number in (0, 1)"),
    (["method.name=lss"], "method.name: unknown method 'lss'; did you mean 'ls'?"),
    (["method.name=ls", "method.options.epslon=0.1"], "unknown key 'method.options.epslon'; did you mean 'epsilon'?"),
    (["method.name=ls", "method.options.epsilon=1.0"], "method.options.epsilon: expected a number in [0, 1)"),
    (["method.options.x=1"], "unknown key 'method.options.x'; nothing is accepted here"),
    (["model.name=resnet20x"], "model.name: unknown model 'resnet20x'; did you mean 'resnet20'?"),
    # the nearest by the longest run shared (difflib's ratio alone said 'resnet56'), from the slot's own names
    (["model.name=resnet18x"], "model.name: unknown model 'resnet18x'; did you mean 'preact_resnet18'?"),
    (["data.dataset=cifar100x"], "got 'cifar100x'; did you mean 'cifar100'?"),
    (["optim.name=adam"], "got 'adam'; did you mean 'adamw'?"),
    (["model.options.shortcut=C"], "model.options:"),
    (["model.options.width=2"], "unknown option(s) ['width']"),
    (["data.augment=randaugment", "data.loader=resident"], "data.loader: 'resident' cannot apply"),
    (["train"], "--set expects key=value"),
    (["train.epochs.x=1"], "train.epochs: expected an integer, got {'x': 1}"),
])
def test_errors_name_key_and_expectation(overrides, message):
    with pytest.raises(ConfigError) as exc:
        config.resolve({}, overrides)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("train:\n  epochs: 3\n")
    assert config.load(ok, ["train.seed=4"]).train.epochs == 3


def test_digest_identifies_results_not_display():
    base = config.resolve()
    assert base.digest() == config.resolve().digest()
    assert base.digest() != config.resolve({}, ["train.seed=1"]).digest()
    assert base.digest() == config.resolve({}, ["train.progress=false"]).digest()


def test_every_schema_field_has_a_default():
    for section in dataclasses.fields(config.Config):
        for f in dataclasses.fields(section.default_factory()):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name


TRAINING_CONFIGS = [p for p in sorted((REPO / "config").glob("*.yaml")) if "studies" not in p.read_text()]


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = config.load(path)
    assert cfg.method.name.split("-")[0] in path.stem.split("-")  # named <dataset>-<method> or <method>-<dataset>


def _icp_imports(path) -> set[str]:
    """The icp modules a source file imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "icp")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "icp":
            found.update(f"icp.{a.name}" if node.module == "icp" else node.module for a in node.names)
    return found


def test_the_generic_schema_is_the_ground_floor():
    """icp.schema imports nothing from icp, so that every module may import it: the methods read icp.schema, never
    icp.config (which imports the methods); the model registry (icp/models/__init__.py) imports no model (it reads
    each model's file by its name) and nothing above icp.schema, icp.declaring and icp.plugins (which imports
    nothing from icp), so that the model files may import it."""
    assert _icp_imports(REPO / "icp/schema.py") == set()
    for path in sorted((REPO / "icp/methods").glob("*.py")):
        assert "icp.config" not in _icp_imports(path), path.name
    assert _icp_imports(REPO / "icp/declaring.py") == {"icp.schema"}
    assert _icp_imports(REPO / "icp/plugins.py") == set()
    assert _icp_imports(REPO / "icp/models/__init__.py") == {"icp.declaring", "icp.plugins", "icp.schema"}
    for path in sorted((REPO / "icp/models").glob("*.py")):
        assert "icp.config" not in _icp_imports(path) and "icp.model_registry" not in _icp_imports(path), path.name


def test_every_config_key_is_documented_in_the_schema_and_the_generated_reference():
    """docs/config.md's table is generated from the schema's own comments (tools/readme.py checks it is current):
    a key added without a comment is a key the reference cannot explain."""
    import dataclasses

    from icp.schema import field_docs

    keys = {f"{s.name}.{name}": note for s in dataclasses.fields(config.Config)
            for name, _, _, note in field_docs(s.default_factory().__class__)}
    assert {k for k, note in keys.items() if not note} == set()
    assert "data.split_seed" in keys and "train.loggers" in keys and "train.eval_every" in keys
    page = (REPO / "docs" / "config.md").read_text()
    assert all(f"`{k}`" in page for k in keys)
