"""What the figures drawn from a trained model show, computed where the model is: in the run's own job, at its end.

``perturbation`` (an ICP run's refined and i-FGSM test images) and ``reconstructions`` / ``samples`` (a VAE's) need
torch and the model; the rest of :mod:`icp.figures` needs only the records. So that the login side that draws the
figures at the end of a sweep never imports torch (a CUDA build of torch alone holds about 650 MB there, and a
sweep's figure steps ran side by side), the engine calls :func:`write` when a run completes: it reloads the final
``last.pt`` on the CPU, computes the arrays of the figures that apply to the run, and writes them to
``RUN_DIR/figure_data.npz``. :func:`load` reads them back with numpy alone; :func:`arrays` computes them in the
drawing process for a run trained before this file existed (the figure is the same either way: the same
checkpoint, the same CPU arithmetic, the same test images).
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Optional

import numpy as np

from icp import atomic

NAME = "figure_data.npz"
VAE_IMAGES = 8  # test images and prior samples a VAE's rows show
PERTURBATION_TEST_IMAGES = 200  # at least this many test images feed the refinement (one training-size batch)


def refines(method: str, options: dict) -> bool:
    """A constructive ICP run that refines its input (not i-FGSM, not the α-only control with K = 0)."""
    from icp.methods.options import ICP_FAMILY

    return method in ICP_FAMILY and method != "ifgsm" and options.get("steps") != 0


def refine_as_training(model, x, y, opts, batch_size: int, n_images: int, bounds=None):
    """The images the perturbation figure shows: ``x[:batch_size]`` refined as *one training batch* (ICP with
    ``opts``, and i-FGSM with the same K and η), of which the first ``n_images`` are returned as
    ``(x, y, ICP-refined x, i-FGSM x)``.

    The refinement's loss is reduced over the batch as in training (``opts.reduction``, ``mean`` by default), so
    each image's step depends on how many images share the batch: refined alone in a batch of 6, an image would
    move 128/6 times as far as it does in a training batch of 128. Refining the training batch size, then
    showing a few, gives each shown image the step that training gives it, whatever ``n_images`` is."""
    from icp.methods.icp import refine

    xb, yb = x[:batch_size], y[:batch_size]
    icp_x = refine(model, xb, yb, opts, bounds)
    fgsm_x = refine(model, xb, yb, dataclasses.replace(opts, optimizer="ifgsm"), bounds)
    return xb[:n_images], yb[:n_images], icp_x[:n_images], fgsm_x[:n_images]


def _as_images(t, info) -> np.ndarray:
    """Normalised tensors (N, C, H, W) as images in [0, 1], (N, H, W, C)."""
    import torch

    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (t.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def perturbation(run_dir: str | Path, n_images: int = 6) -> dict:
    """The perturbation figure's arrays of an ICP run: its first test images, ICP-refined and i-FGSM versions (as
    images in [0, 1]), each one's softmax probability of the true class, and the refinement's settings."""
    import torch

    from icp import checkpoint, config, data, loaders
    from icp.methods import get

    trained = checkpoint.trained(run_dir, "figure perturbation", files=("last.pt",))
    batch = config.resolve(trained.config).train.batch_size
    cfg = config.resolve(trained.config, ["train.device=cpu",
                                          f"data.test_subset={max(PERTURBATION_TEST_IMAGES, batch)}"])
    info, test = data.test_split(cfg)  # the training images stay unread
    model = trained.model(info.num_classes, info.in_channels, test.images.shape[1])
    x, y = next(iter(loaders.EvalLoader(test, info, torch.device("cpu"), batch, False)))
    opts = get(cfg.method.name).Options(**{k: v for k, v in cfg.method.options.items() if k != "teacher"})
    opts = dataclasses.replace(opts, cuda_graph=False)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    bounds = (-mean / std, (1 - mean) / std) if opts.clamp else None  # as training clamps (method.options.clamp)
    refined = len(x)
    x, y, icp_x, fgsm_x = refine_as_training(model, x, y, opts, batch, min(n_images, refined), bounds)
    with torch.no_grad():
        conf = {k: torch.softmax(model(v), 1).gather(1, y[:, None])[:, 0].numpy()
                for k, v in (("original", x), ("ICP", icp_x), ("i-FGSM", fgsm_x))}
    return {"original": _as_images(x, info), "ICP": _as_images(icp_x, info), "i-FGSM": _as_images(fgsm_x, info),
            **{f"p.{k}": v for k, v in conf.items()}, "batch": np.int64(batch), "refined": np.int64(refined),
            "steps": np.int64(opts.steps), "step_size": np.float64(opts.step_size),
            "optimizer": np.str_(opts.optimizer), "reduction": np.str_(opts.reduction)}


def vae(run_dir: str | Path, n_images: int = VAE_IMAGES) -> dict:
    """A VAE run's figure arrays: its first test images, their reconstructions (z = μ) and ``n_images`` prior
    samples from one fixed generator (the same z for every method), each in the model's normalised units (N, C, H,
    W), with the dataset's ``mean`` and ``std`` that turn them into images."""
    import torch

    from icp import checkpoint, config, data, loaders

    trained = checkpoint.trained(run_dir, "figure", files=("last.pt",))
    cfg = config.resolve(trained.config, ["train.device=cpu", "data.test_subset=100"])
    info, test = data.test_split(cfg)
    x, _ = next(iter(loaders.EvalLoader(test, info, torch.device("cpu"), 100, False)))
    model = trained.model(info.num_classes, info.in_channels, test.images.shape[1])
    with torch.no_grad():
        recon = model(x[:n_images]).recon
        samples = model.sample(n_images, torch.Generator().manual_seed(0))
    return {"inputs": x[:n_images].numpy(), "recon": recon.numpy(), "samples": samples.numpy(),
            "mean": np.asarray(info.mean, dtype=np.float64), "std": np.asarray(info.std, dtype=np.float64)}


def kinds(method: str, options: dict, model: str) -> list[str]:
    """The figure arrays that apply to a run: ``perturbation`` for an ICP run that refines, ``vae`` for a VAE."""
    from icp.model_registry import is_generative

    return [k for k, applies in (("perturbation", refines(method, options)), ("vae", is_generative(model))) if applies]


def arrays(run_dir: str | Path, kind: str) -> dict:
    return {"perturbation": perturbation, "vae": vae}[kind](run_dir)


def write(run_dir: str | Path, method: str, options: dict, model: str) -> Optional[Path]:
    """Compute and write ``RUN_DIR/figure_data.npz`` (each kind's arrays as ``<kind>/<key>``; atomic) for the figures
    that apply to the run; nothing for a run no such figure draws. Returns the file."""
    found = {f"{kind}/{key}": value for kind in kinds(method, options, model)
             for key, value in arrays(run_dir, kind).items()}
    if not found:
        return None
    path = Path(run_dir) / NAME
    buf = io.BytesIO()
    np.savez_compressed(buf, **found)
    return atomic.write(buf.getbuffer(), path)


def load(run_dir: str | Path, kind: str) -> Optional[dict]:
    """``kind``'s arrays as the run's job wrote them (numpy only), or None where it wrote none."""
    path = Path(run_dir) / NAME
    if not path.is_file():
        return None
    with np.load(path) as npz:
        got = {name.split("/", 1)[1]: npz[name] for name in npz.files if name.startswith(f"{kind}/")}
    if not got:
        return None
    return {k: (v.item() if v.ndim == 0 else v) for k, v in got.items()}


def get_arrays(run_dir: str | Path, kind: str) -> dict:
    """The run's own arrays, else (a run trained before its job wrote them) computed here from its last.pt."""
    return load(run_dir, kind) or {k: (v.item() if np.ndim(v) == 0 else v) for k, v in arrays(run_dir, kind).items()}
