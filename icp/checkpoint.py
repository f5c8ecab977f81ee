"""Atomic checkpoints and RNG state capture.

``last.pt`` is written every epoch through a temporary file in the same directory followed by
``os.replace``, so an interrupted write (an exception, a kill, a full disk) leaves the previous ``last.pt``
intact and loadable. A checkpoint is a dict::

    format       CHECKPOINT_FORMAT
    epoch        epochs completed
    config       the resolved config (dict) and its digest
    method       method.state_dict(): the model under the "model." prefix, plus the method's modules/buffers
    method_extra method.extra_state() (e.g. an extra optimizer)
    optimizer, scheduler   state_dicts
    rng          python / numpy / torch (CPU and CUDA) generator states
    record       the run record as of this epoch (what record.json held)
    best         {"epoch", "value"} of the best validation epoch so far, or None

Checkpoints are our own files, loaded with ``weights_only=False`` (they hold numpy RNG state); never load a
checkpoint from an untrusted source.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def model_state(ckpt: dict) -> dict:
    """The bare classifier's state_dict from a checkpoint (drops the method's own modules)."""
    return {k[len("model."):]: v for k, v in ckpt["method"].items() if k.startswith("model.")}


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
