"""A method is one file (icp.methods.options): a module beside the others, or in another installed package under the
`icp.methods` entry point group, is found without registering it anywhere, read without torch by the grid, and
trained by name; a module the registry cannot build is one line in every entry point. Each case runs in a fresh
interpreter (the catalogue is read once per process), the plugin files under tmp_path."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY, installed_plugin, run_python
from tests.test_pipeline import SNAKEMAKE

METHOD = '''
"""A test method: label smoothing under another name."""
from __future__ import annotations

from dataclasses import dataclass

from icp.methods.options import Cost, declare
from icp.schema import ConfigError


@dataclass
class Options(Cost):
    epsilon: float = 0.2

    def __post_init__(self):
        if not 0 <= self.epsilon < 1:
            raise ConfigError(f"method.options.epsilon: expected a number in [0, 1), got {self.epsilon!r}")


declare({"{name}": Options})

import torch.nn.functional as F  # noqa: E402

from icp.methods import register  # noqa: E402
from icp.methods.base import Method, TrainOutput  # noqa: E402


@register
class Smooth(Method):
    name = "{name}"
    Options = Options

    def forward_train(self, batch, epoch):
        logits = self.model(batch.x)
        return TrainOutput(logits, {"ls": F.cross_entropy(logits, batch.y, label_smoothing=self.options.epsilon)})
'''


def test_a_new_module_beside_the_methods_is_found_read_without_torch_and_trained(tmp_path, fmnist_root):
    folder = tmp_path / "methods"
    folder.mkdir()
    (folder / "zz_smooth.py").write_text(METHOD.replace("{name}", "zz-smooth"))
    out = tmp_path / "run"
    args = ["train", "--set", f"data.root={fmnist_root}", *[a for item in TINY for a in ("--set", item)],
            "--set", "train.epochs=1", "--set", "method.name=zz-smooth", "--out", str(out)]
    proc = run_python(f"""
        import sys
        import icp.methods as m
        m.__path__.append({str(folder)!r})  # as if the file were in icp/methods/
        from icp.methods import list_methods, validate_options
        assert "zz-smooth" in list_methods(), list_methods()
        assert validate_options("zz-smooth", {{}}) == {{"epsilon": 0.2}}
        assert "torch" not in sys.modules  # read without running the method's torch half
        from icp.cli import main
        sys.exit(main({args!r}))
    """)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "complete" and record["config"]["method"] == {"name": "zz-smooth",
                                                                              "options": {"epsilon": 0.2}}


def test_a_method_of_another_installed_package_is_found_by_its_entry_point(tmp_path, fmnist_root):
    env = installed_plugin(tmp_path / "site", "smoothplug", METHOD.replace("{name}", "plug-smooth"), "icp.methods")
    listed = subprocess.run([sys.executable, "-m", "icp", "methods"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=env)
    assert listed.returncode == 0 and "plug-smooth" in listed.stdout, listed.stdout + listed.stderr
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "runs_dir": str(tmp_path / "runs"), "data_root": str(fmnist_root), "seeds": [0],
        "recipes": {"fashion-mnist/resnet20": str(REPO / "config/recipes/fmnist-resnet20.yaml")},
        "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["plug-smooth"],
                              "options": {"epsilon": [0.1, 0.3]}}]}}))
    _listed_everywhere(grid, env, "plug-smooth+epsilon=0.3")


def _listed_everywhere(grid: Path, env: dict, variant: str) -> None:
    """``icp methods``, ``icp grid`` and ``snakemake -n`` all know the method, with no other edit."""
    name = variant.split("+")[0]
    # `python -m` puts its working directory first on sys.path: run the icp commands beside the grid, not in REPO
    for cmd, want, cwd in (([sys.executable, "-m", "icp", "methods"], f"\n{name}", grid.parent),
                           ([sys.executable, "-m", "icp", "grid", "--grid", str(grid)], variant, grid.parent),
                           (["timeout", "-s", "KILL", "300", SNAKEMAKE, "-n", "runs", "--config", f"grid={grid}"],
                            variant, REPO)):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=320, env=env)
        assert proc.returncode == 0 and want in proc.stdout + proc.stderr, (cmd, proc.stdout[-1500:], proc.stderr[-1500:])


def test_a_module_dropped_into_a_copy_of_icp_methods_is_known_everywhere(tmp_path, fmnist_root):
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(REPO / "icp", copy / "icp", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "workflow").symlink_to(REPO / "workflow")  # the grid schema, which icp reads beside its package
    (copy / "icp" / "methods" / "zz_dropped.py").write_text(METHOD.replace("{name}", "dropped"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "runs_dir": str(tmp_path / "runs"), "data_root": str(fmnist_root), "seeds": [0],
        "recipes": {"fashion-mnist/resnet20": str(REPO / "config/recipes/fmnist-resnet20.yaml")},
        "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce", "dropped"]}]}}))
    _listed_everywhere(grid, {**os.environ, "PYTHONPATH": str(copy)}, "dropped")


def test_a_module_that_registers_no_method_or_cannot_be_read_is_one_line_everywhere(tmp_path):
    broken = METHOD.replace("{name}", "half-made").split("import torch.nn.functional")[0]  # no @register
    env = installed_plugin(tmp_path / "site", "halfplug", broken, "icp.methods")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "runs_dir": str(tmp_path / "runs"), "seeds": [0],
        "recipes": {"fashion-mnist/resnet20": "config/recipes/fmnist-resnet20.yaml"},
        "studies": {"main": [{"datasets": ["fashion-mnist"], "models": ["resnet20"], "methods": ["ce"]}]}}))
    for cmd in ([sys.executable, "-m", "icp", "grid", "--grid", str(grid)],
                [sys.executable, "-m", "icp", "methods"],
                ["timeout", "-s", "KILL", "300", SNAKEMAKE, "-n", "--config", f"grid={grid}"]):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=320, env=env)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "icp: error:" in ln]
        assert proc.returncode != 0 and len(errors) == 1, (cmd, proc.stdout[-1500:], proc.stderr[-1500:])
        assert "halfplug.py: declares method 'half-made' but registers no Method class" in errors[0], errors
    # a file that does not even parse: named, one line
    env = installed_plugin(tmp_path / "b" / "site", "badplug", "def oops(:\n", "icp.methods")
    proc = subprocess.run([sys.executable, "-m", "icp", "grid", "--grid", str(grid)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "badplug.py" in proc.stderr, proc.stderr


def test_a_name_declared_twice_is_refused_with_both_places(tmp_path):
    env = installed_plugin(tmp_path / "site", "twiceplug", METHOD.replace("{name}", "ls"), "icp.methods")
    proc = subprocess.run([sys.executable, "-m", "icp", "methods"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2 and "method 'ls' is declared twice: in icp.methods.ls and in twiceplug" in \
        proc.stderr, proc.stderr
