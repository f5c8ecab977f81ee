"""Atomic checkpoints and RNG state capture.

``last.pt`` is written every epoch through a temporary file in the same directory followed by ``os.replace``
(:func:`icp.atomic.write`), so an interrupted write (an exception, a kill, a full disk) leaves the previous
``last.pt`` intact and loadable. One checkpoint is kept back: the previous ``last.pt`` becomes ``last.prev.pt`` when a new one
replaces it, and :func:`load_resumable` falls back to it when ``last.pt`` cannot be read (a file truncated or
corrupted by something outside our atomic writes), so such a run loses one epoch rather than all of them.
A checkpoint is a dict::

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

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from icp import atomic

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """No readable checkpoint to resume from, reported to the user as one line."""


def previous(path: str | Path) -> Path:
    """Where the checkpoint kept back from ``path`` lives: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj: Any, path: str | Path, keep_previous: bool = False) -> None:
    """Write ``obj`` to ``path`` atomically (:func:`icp.atomic.write`); with ``keep_previous`` the old file becomes
    :func:`previous` (``path`` is missing for an instant only after the new file is complete on disk)."""
    buffer = io.BytesIO()  # serialised first: a failed write then raises the OSError (ENOSPC, EDQUOT) that says why,
    torch.save(obj, buffer)  # where torch's own writer reports "unexpected pos" without a cause
    atomic.write(buffer.getbuffer(), path, previous=previous(path) if keep_previous else None)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def _try_load(path: Path) -> tuple[Optional[dict], str]:
    try:
        ckpt = load(path)
    except Exception as exc:  # truncated, corrupted, not a torch file
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        return None, "not a checkpoint of this format"
    return ckpt, ""


def load_resumable(path: str | Path, warn: Callable[[str], None]) -> Optional[dict]:
    """The checkpoint at ``path``, else (when unreadable) the one kept back, with one ``warn`` line naming the
    unreadable file; None when neither exists. Raises :class:`CheckpointError` when none can be read."""
    path = Path(path)
    prev = previous(path)
    if not path.exists() and not prev.exists():
        return None
    reasons = []
    for candidate in (path, prev):
        if not candidate.exists():
            continue
        ckpt, why = _try_load(candidate)
        if ckpt is not None:
            ckpt["loaded_from"] = candidate.name  # which file: the resume line and the record name it
            if reasons:
                ckpt["fallback"] = f"{'; '.join(reasons)}; resumed from {candidate} (epoch {ckpt['epoch']})"
                warn(ckpt["fallback"])
            return ckpt
        reasons.append(f"{candidate} is unreadable ({why})")
    raise CheckpointError(f"{'; '.join(reasons)}; no good checkpoint to resume from (delete the run directory "
                          f"to start the run again)")


def model_state(ckpt: dict) -> dict:
    """The bare model's state_dict from a checkpoint of either format: ``best.pt`` holds it under ``model``;
    ``last.pt`` holds the method's state, the model under the ``model.`` prefix (the method's own modules are
    dropped)."""
    if "model" in ckpt:
        return ckpt["model"]
    return {k[len("model."):]: v for k, v in ckpt["method"].items() if k.startswith("model.")}


@dataclass(frozen=True)
class Trained:
    """A trained run's model as a checkpoint holds it: the file, the run's resolved config (a dict, as saved) and
    the bare model's state_dict."""

    file: Path
    config: dict
    state: dict

    def model(self, num_classes: int, in_channels: int, input_size: Optional[int] = None) -> torch.nn.Module:
        """The model rebuilt from the run's config with its trained weights, in eval mode."""
        from icp import model_registry

        spec = self.config["model"]
        net = model_registry.build_model(spec["name"], num_classes, in_channels, input_size, **spec.get("options", {}))
        net.load_state_dict(self.state)
        return net.eval()


def trained(path: str | Path, what: str, files: tuple[str, ...] = ("best.pt", "last.pt"), complete: bool = False,
            model: str = "", dataset: str = "") -> Trained:
    """A trained model from a run directory (the first of ``files`` it holds) or a checkpoint file, for the AI-KD
    teacher, FID's feature network and the figures: the one reader of "the model a run trained". Every problem is
    a one-line :class:`icp.schema.ConfigError` that starts with ``what`` (the config key or figure asking):
    nothing found, a file that is not a checkpoint of ``icp train``, a ``last.pt`` of an unfinished run
    (``complete``), or a run of another ``model`` or ``dataset`` (each checked when given)."""
    from icp.schema import ConfigError

    p = Path(path).expanduser()
    if p.is_dir():
        file = next((p / n for n in files if (p / n).is_file()), None)
        if file is None:
            raise ConfigError(f"{what}: {p} holds no {' or '.join(files)} (train that run first)")
    elif p.is_file():
        file = p
    else:
        raise ConfigError(f"{what}: {p} not found (train that run first)")
    try:
        ckpt = load(file, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{what}: cannot read {file} as a checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or not (
            "model" in ckpt or "method" in ckpt):
        raise ConfigError(f"{what}: {file} is not a checkpoint written by icp train")
    status = (ckpt.get("record") or {}).get("status")
    if complete and "method" in ckpt and status != "complete":  # last.pt; best.pt is a finished epoch's model
        raise ConfigError(f"{what}: {file} is from an unfinished run (status {status!r})")
    cfg = ckpt["config"]
    found = {"model": cfg.get("model", {}).get("name"), "dataset": cfg.get("data", {}).get("dataset")}
    for key, want in (("model", model), ("dataset", dataset)):
        if want and found[key] != want:
            raise ConfigError(f"{what}: {file} holds a {key} '{found[key]}' run, this run trains '{want}'")
    return Trained(file, cfg, model_state(ckpt))


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
