"""The login side's check before submission (icp.preflight): every dataset, FID network and teacher that the runs
without a record need is found, or named in one line with the command that prepares it."""
import os
import subprocess
from pathlib import Path

import yaml

from icp import data, grid, preflight, records
from tests.conftest import REPO
from tests.test_pipeline import SNAKEMAKE, tiny_grid


def _two_datasets(tmp_path, fmnist_root, **extra):
    """A tiny grid of Fashion-MNIST (installed) and CIFAR-100 (not under its root) runs."""
    path = tiny_grid(tmp_path, fmnist_root, ["ce"])
    g = yaml.safe_load(path.read_text())
    g["recipes"]["cifar100/resnet20"] = "config/recipes/cifar-resnet20.yaml"
    g["studies"]["main"].append({"datasets": ["cifar100"], "models": ["resnet20"], "methods": ["ce", "aikd"]})
    g.update(extra)
    path.write_text(yaml.safe_dump(g))
    return path


def test_each_missing_dataset_is_one_line_with_the_command_that_prepares_it(tmp_path):
    for name, command in [("cifar10", "icp data prepare --dataset cifar10"),
                          ("cifar100", "icp data prepare --dataset cifar100"),
                          ("cub", "icp data prepare --dataset cub"), ("imagefolder", "train/<class>")]:
        line = data.missing(name, tmp_path)
        assert line and "\n" not in line and command in line and str(tmp_path) in line, (name, line)
    # torchvision's layout, file by file: one archive member missing is still missing
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"x")
    assert "cifar-100-python/test" in data.missing("cifar100", tmp_path)
    (folder / "test").write_bytes(b"x")
    assert data.missing("cifar100", tmp_path) is None
    for split in ("train", "test"):
        (tmp_path / "folder" / split / "a").mkdir(parents=True)
    assert data.missing("imagefolder", tmp_path / "folder") is None


def test_the_grid_check_names_each_missing_dataset_once_with_its_runs_and_skips_what_has_a_record(
        tmp_path, fmnist_root):
    g = grid.load_expand(_two_datasets(tmp_path, fmnist_root))
    lines = preflight.check_grid(g)
    # cifar100: ce and aikd (its teacher is the ce run, trained by the grid itself: not missing); fashion-mnist found
    assert len(lines) == 1 and lines[0].startswith(f"cifar100 not found under {fmnist_root}"), lines
    assert "[2 runs need it, e.g. cifar100/resnet20/clean/ce/s0]" in lines[0]
    assert preflight.check_grid(g, "false") == [] and preflight.check_grid(g, False) == []
    for run in g.runs.values():  # runs that already have a record need nothing more
        if run.dataset == "cifar100":
            Path(run.run_dir).mkdir(parents=True)
            records.write({"status": "complete"}, Path(run.record))
    assert preflight.check_grid(g) == []


def test_a_teacher_and_an_inception_network_outside_the_grid_are_checked(tmp_path, fmnist_root, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    produced = {str(tmp_path / "runs/ce")}
    teacher = preflight.needs(grid_config(fmnist_root, "method.name=aikd",
                                          f"method.options.teacher={tmp_path}/elsewhere"), produced)
    assert len(teacher) == 1 and "method.options.teacher:" in teacher[0] and "elsewhere" in teacher[0]
    assert preflight.needs(grid_config(fmnist_root, "method.name=aikd",
                                       f"method.options.teacher={tmp_path}/runs/ce"), produced) == []
    vae = grid_config(fmnist_root, "model.name=vae", "method.name=vae", "train.fid_features=inception")
    (line,) = preflight.needs(vae, produced)
    assert str(tmp_path / "th/hub/checkpoints") in line and "curl -L -o" in line
    weights = tmp_path / "th/hub/checkpoints" / preflight.INCEPTION_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    assert preflight.needs(vae, produced) == []
    assert preflight.needs(grid_config(fmnist_root, "model.name=vae", "method.name=vae",
                                       f"train.fid_features={tmp_path}/nowhere"), produced)


def grid_config(root, *overrides):
    from icp import config

    return config.resolve({}, [f"data.root={root}", *overrides])


def test_snakemake_stops_before_any_job_with_one_line_per_missing_dataset(tmp_path, fmnist_root):
    """Through the workflow (local profile; the SLURM drill is in test_faults): exit 1, the line, nothing run;
    a dry run is not stopped (Snakemake calls onstart only when jobs run)."""
    path = _two_datasets(tmp_path, fmnist_root)
    cmd = ["timeout", "-s", "KILL", "300", SNAKEMAKE, "runs", "--profile", "profiles/local", "--config",
           f"grid={path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=320)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("icp: error:")]
    assert proc.returncode == 1, out[-3000:]
    assert len(errors) == 1 and "cifar100 not found" in errors[0] and "icp data prepare --dataset cifar100" in \
        errors[0], out[-3000:]
    assert "check_inputs=false" in out
    assert not (tmp_path / "runs").exists()  # no run started, the fashion-mnist one included
    dry = subprocess.run([*cmd, "-n"], cwd=REPO, capture_output=True, text=True, timeout=320)
    assert dry.returncode == 0 and "icp: error" not in dry.stdout + dry.stderr


def test_a_call_with_targets_checks_only_the_runs_it_will_train(tmp_path, fmnist_root):
    """One Fashion-MNIST target on a machine without CIFAR-100 trains; the whole grid is still refused."""
    from icp import grid

    path = _two_datasets(tmp_path, fmnist_root)
    g = grid.load_expand(path)
    target = next(r.record for r in g.runs.values() if r.dataset == "fashion-mnist")
    cmd = ["timeout", "-s", "KILL", "300", SNAKEMAKE, target, "--profile", "profiles/local", "--jobs", "1",
           "--cores", "1", "--config", f"grid={path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=320)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "icp: error" not in out, out[-3000:]
    assert Path(target).exists()


def test_the_slurm_profile_without_slurm_is_one_line_and_writes_nothing(tmp_path, fmnist_root):
    import shutil

    path = _two_datasets(tmp_path, fmnist_root)
    bin_dir = tmp_path / "bin"  # a PATH with bash and the venv, without SLURM's commands
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    env = {**os.environ, "PATH": f"{Path(SNAKEMAKE).parent}:{bin_dir}"}
    proc = subprocess.run([SNAKEMAKE, "runs", "--profile", "slurm", "--config", f"grid={path}",
                           "check_inputs=false"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if "error" in ln.lower()]
    assert proc.returncode == 1 and len(errors) == 1 and "no sbatch on its PATH" in errors[0], out[-3000:]
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_a_grid_file_given_to_configfile_is_refused_with_the_right_command():
    proc = subprocess.run([SNAKEMAKE, "-n", "--configfile", "config/laptop.yaml"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "is a grid file, not a Snakemake config: give it as `--config grid=" in proc.stderr.splitlines()[-1]


def test_a_target_written_after_config_is_one_line_and_the_right_order_parses():
    assert preflight.swallowed_target(["-n", "--config", "check_inputs=false", "runs"]) == "runs"
    assert preflight.swallowed_target(["runs", "--config", "check_inputs=false", "-n"]) is None
    assert preflight.swallowed_target(["--config", "a=1", "--", "runs"]) is None
    assert preflight.swallowed_target(["-C", "a=-1", "-3"]) == "-3"  # a negative number is a value, as in argparse
    proc = subprocess.run(["timeout", "-s", "KILL", "120", SNAKEMAKE, "-n", "--config", "check_inputs=false", "runs"],
                          cwd=REPO, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "icp: error: --config took 'runs' as a config entry (it reads every word after it as name=value): put "
        "targets before --config, or end its entries with --"]
    fixed = subprocess.run(["timeout", "-s", "KILL", "120", SNAKEMAKE, "-n", "--config", "check_inputs=false", "--",
                            "runs"], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert fixed.returncode == 0 and "icp: error" not in fixed.stderr, fixed.stderr[-2000:]
