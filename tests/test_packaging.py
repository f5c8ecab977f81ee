"""Set-up contracts: pins agree, the README's two commands exist, CI runs the README's test command."""
import re
import tomllib

import yaml

from tests.conftest import REPO


def _pins(lines):
    return {re.split(r"[=<>]", d, 1)[0].lower(): d for d in lines}


def test_environment_yml_pins_equal_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_block) == py
    assert all("==" in d for d in py.values())


def _readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    run, test = commands
    assert "dvc repro" in run and "pytest" in test
    ci = (REPO / ".ci" / "run").read_text()
    assert test.strip() in ci


def test_default_config_is_valid():
    from icp import config

    cfg = config.load(REPO / "config" / "fmnist-ce.yaml")
    assert cfg.data.dataset == "fashion-mnist" and cfg.method.name == "ce"
