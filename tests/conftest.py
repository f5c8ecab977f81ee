"""Shared fixtures. Real Fashion-MNIST is required (Debian's dataset-fashion-mnist, installed by .ci/run)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from icp import config, data

REPO = Path(__file__).resolve().parent.parent

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

    torch.set_num_threads(min(2, os.cpu_count() or 1))
