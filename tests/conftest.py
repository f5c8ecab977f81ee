"""Shared fixtures. Real Fashion-MNIST is required (Debian's dataset-fashion-mnist, installed by .ci/run)."""
from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import subprocess
from pathlib import Path

# Two pytest-xdist workers (pyproject's addopts) share 2 cores: each worker, and every process it starts (icp train,
# Snakemake's jobs, SLURM's jobs inherit the environment), computes with one thread, set before torch is imported.
# Two threads a process beside the other worker's oversubscribe the cores: a test that trained in its own process
# was 3-8x slower. `-n 0` runs the suite in one process with up to 2 threads.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
THREADS = 1 if WORKER else min(2, os.cpu_count() or 1)

import pytest  # noqa: E402

from icp import config, data  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# Where a test run may write inside the repository: caches of Python and pytest, the virtual environment, and
# Snakemake's own bookkeeping (.snakemake/, ignored: any snakemake call keeps it in its working directory; it holds
# no result). Everything else a test writes goes under its tmp paths.
_MAY_CHANGE = {".git", ".venv", "__pycache__", ".pytest_cache", ".snakemake", ".ruff_cache"}


def work_tree_files(root: Path = REPO) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime in ns) of every file of the work tree, tracked or not, ignored or not, but for the
    places a test run may change (``_MAY_CHANGE``, ``*.egg-info``)."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _MAY_CHANGE and not d.endswith(".egg-info")]
        for name in files:
            path = Path(top, name)
            with contextlib.suppress(OSError):
                st = path.lstat()
                out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def pytest_sessionstart(session):
    if not WORKER:  # the controlling process (or the only one) checks the work tree, before and after all workers
        session.config._work_tree_before = work_tree_files()


def pytest_sessionfinish(session, exitstatus):
    """The suite fails when it leaves the work tree changed: tests write only under their tmp paths."""
    before = getattr(session.config, "_work_tree_before", None)
    if before is None:
        return
    after = work_tree_files()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if changed:
        print(f"\nFAILED: the test suite changed {len(changed)} files of the work tree (tests write only under "
              f"their tmp paths): " + ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

# Small, fast runs on the real dataset: a stratified subset of the training and test splits.
TINY = ["data.train_subset=600", "data.test_subset=300", "train.batch_size=50", "train.eval_batch_size=300",
        "train.progress=false", "model.name=resnet20", "optim.lr=0.05", "train.epochs=2"]


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    """A data root that holds no copy: Fashion-MNIST is found in Debian's package location."""
    if data._find_fashion_mnist(Path("/nonexistent")) is None:
        pytest.fail("Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` (done by .ci/run)")
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_cfg(fmnist_root):
    def make(*overrides: str) -> config.Config:
        return config.resolve({}, [f"data.root={fmnist_root}", *TINY, *overrides])

    return make


@pytest.fixture(autouse=True)
def _threads():
    import torch

    torch.set_num_threads(THREADS)


# pyproject's addopts: -n 2 --dist loadscope --no-loadscope-reorder, with the units below. A test that runs Snakemake
# in this checkout (which admits one sweep at a time: icp.runlock) or uses the SLURM test cluster (one cluster, whose
# controller some drills stop) cannot run beside another such test: they are one unit of work, run by one worker one
# after the other, and handed out first (the longest unit). Such a test is found by what it calls, reading its
# module's source: its own source (its parameters: the `slurm` fixture) or that of a helper of its module it calls
# names Snakemake or SLURM. A module whose tests work in a copy of the repository says so with OWN_CHECKOUT = True
# (test_dvc); its tests go next, as one unit. Every other test is a unit with the rest of its module (its module
# fixtures built once, its tests in order).
CHECKOUT = "checkout"
_NAMES_THE_CHECKOUT = re.compile(r"snakemake|\bsmk\b|\bslurm|uninterrupted_drill|sbatch|squeue|scontrol|sacct|"
                                 r"login_bench|gpu_reference", re.I)


@functools.cache
def own_checkout(path: Path) -> bool:
    return re.search(r"^OWN_CHECKOUT = True", path.read_text(), re.M) is not None


@functools.cache
def checkout_tests(path: Path) -> frozenset[str]:
    """The test functions of the module at ``path`` that run Snakemake in this checkout or use SLURM (see above)."""
    if own_checkout(path):
        return frozenset()
    source = path.read_text()
    funcs = {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
             if isinstance(node, ast.FunctionDef)}
    calls = lambda text, names: any(re.search(rf"\b{n}\(", text) for n in names)
    helpers: set[str] = set()
    while True:  # helpers that call such helpers, to a fixed point
        more = {name for name, text in funcs.items() if not name.startswith("test") and name not in helpers and (
            _NAMES_THE_CHECKOUT.search(text) or calls(text, helpers))}
        if not more:
            break
        helpers |= more
    return frozenset(name for name, text in funcs.items() if name.startswith("test") and (
        _NAMES_THE_CHECKOUT.search(text) or calls(text, helpers)))


def unit_of_work(nodeid: str) -> str:
    """The xdist unit a test belongs to: :data:`CHECKOUT`, or its module's path."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("::")[-1].split("[")[0]
    return CHECKOUT if name in checkout_tests(REPO / path) else path


def pytest_collection_modifyitems(session, config, items):
    """The checkout unit first, then the modules with their own checkout (long), then the rest in file order."""
    def rank(item) -> int:
        path = REPO / item.nodeid.partition("::")[0]
        return 0 if unit_of_work(item.nodeid) == CHECKOUT else 1 if own_checkout(path) else 2

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` by :func:`unit_of_work` (by module, but for the checkout unit)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return Units(config, log)


# One epoch on 1000 real Fashion-MNIST images (no augmentation, small batches): ce reaches about 0.6 test top-1
# on the CPU (chance: 0.1), so a method that learns at all clears 0.5.
ONE_EPOCH = ["data.train_subset=1000", "data.test_subset=500", "train.batch_size=16", "train.eval_batch_size=500",
             "optim.lr=0.03", "train.epochs=1", "schedule.name=cosine", "schedule.warmup_epochs=0.2",
             "data.augment=none"]


@pytest.fixture
def one_epoch_top1(tiny_cfg, tmp_path):
    """Train one epoch of the ONE_EPOCH recipe (plus overrides) into tmp_path/<out>; return the test top-1."""
    from icp import engine

    def run(*overrides: str, out: str = "run") -> float:
        record = engine.Trainer(tiny_cfg(*ONE_EPOCH, *overrides), tmp_path / out).run()
        assert record["status"] == "complete"
        return record["last"]["test"]["top1"]

    return run


def assert_resume_is_exact(cfg, root: Path) -> dict:
    """Train ``cfg`` uninterrupted into root/full and with an interruption after every epoch into root/part;
    assert identical per-epoch records and final checkpoints (method state and extra state); return the final
    method state."""
    from icp import checkpoint, engine

    full = engine.Trainer(cfg, root / "full").run()
    for _ in range(cfg.train.epochs - 1):
        assert engine.Trainer(cfg, root / "part").run(max_epochs=1)["status"] == "running"
    resumed = engine.Trainer(cfg, root / "part").run()
    assert resumed["status"] == "complete" and resumed["resumed"] == cfg.train.epochs - 1
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in eps]
    assert strip(resumed["epochs"]) == strip(full["epochs"])
    a, b = (checkpoint.load(root / d / "last.pt") for d in ("full", "part"))
    assert same_state(a["method"], b["method"]) and same_state(a["method_extra"], b["method_extra"])
    return a["method"]


def assert_close_at_scale(actual, expected, rel: float = 1e-4) -> None:
    """Equal up to the rounding of float32 arithmetic through a network's forward and backward passes, on any CPU:
    each element within ``rel`` of itself or of the tensor's scale (its largest magnitude). CPUs' kernels (AVX2,
    AVX-512, plain) sum in different orders, so an element near zero carries an error of the tensor's scale, not
    of its own size: 2 of 25,088 input-gradient elements once differed by 1.9e-9 (a relative 5e-3) on another CPU.
    ``rel`` 1e-4 is about 800 float32 ulps of the scale: loose for rounding, far below any error in the maths."""
    import torch

    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


def same_state(a, b) -> bool:
    """Equality of nested dicts/lists of tensors and plain values, tensors compared exactly."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def installed_plugin(site: Path, module: str, source: str, group: str) -> dict:
    """A plugin installed in ``site``: the module ``module`` (``source``) and its dist-info, whose entry point of
    ``group`` (``icp.methods``, ``icp.figures``) names it. Returns the environment that puts ``site`` (and this
    repository) on PYTHONPATH."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{module} = {module}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def run_python(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` (dedented) in a fresh interpreter in the repository: a registry's catalogue is read once a process."""
    import sys
    import textwrap

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def slurm():
    """A real SLURM cluster for the tests that need one: started once (and stopped after) unless one already answers."""
    script = ["bash", str(REPO / "tools/slurm_cluster.sh")]
    if subprocess.run([*script, "status"], capture_output=True).returncode == 0:
        yield
        return
    # with accounting (MariaDB + slurmdbd), as real clusters have it: sacct answers, submitit reads job states
    up = subprocess.run(["bash", str(REPO / "tools/slurm_cluster.sh"), "up"], capture_output=True, text=True,
                        timeout=600, env={**os.environ, "WITH_DBD": "1"})
    assert up.returncode == 0, up.stderr
    yield
    subprocess.run(["bash", str(REPO / "tools/slurm_cluster.sh"), "down"], capture_output=True, timeout=120)


# The run the SLURM drills interrupt (scancel, SIGKILL, a requeue) and then resume: ce on 1,500 images, 4 epochs
DRILL = ("data.train_subset=1500", "train.epochs=4")


@pytest.fixture(scope="session")
def uninterrupted_drill(slurm, fmnist_root, tmp_path_factory) -> dict:
    """The drills' run (:data:`DRILL`) trained once for the session, uninterrupted, as a SLURM job (the threads and
    libraries of the drills' own jobs): run id -> its epochs without their timings, what every drill's resumed run
    must equal."""
    from icp import grid, records
    from tests.test_pipeline import LAUNCH, strip_timing, tiny_grid

    root = tmp_path_factory.mktemp("uninterrupted")
    (run,) = grid.load_expand(tiny_grid(root, fmnist_root, ["ce"], *DRILL)).runs.values()
    proc = subprocess.run([*LAUNCH, "--timeout-min", "10", "--", *run.train_args()], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {run.run_id: strip_timing(records.read(run.record)["epochs"])}
