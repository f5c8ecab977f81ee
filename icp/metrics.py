"""Evaluation metrics, computed on the device and reset before every evaluation.

=========  ==========================================================================================
top1       micro-averaged accuracy (fraction correct)
macro_f1   F1 per class, averaged over classes
precision  macro-averaged precision
recall     macro-averaged recall
nll        mean negative log-likelihood of the true label (cross-entropy, nats)
ece        expected calibration error, 10 equal-width confidence bins, L1 (Guo et al. 2017)
=========  ==========================================================================================

All values are fractions in [0, 1] except ``nll``. Whether larger is better: :data:`HIGHER_IS_BETTER`.

The classifier's metrics are torchmetrics' (``MulticlassAccuracy`` micro, ``MulticlassF1Score``,
``MulticlassPrecision`` and ``MulticlassRecall`` macro, ``MulticlassCalibrationError`` 10 bins L1, ``MeanMetric``)
computed by the same tensor operations here, from a confusion matrix and the top-1 confidences: importing
torchmetrics costs about 3.8 s on 2 cores (its package imports torchvision, scipy.signal and every domain's
metrics), twice ``import torch``, for every run. ``tests/test_metrics.py`` checks equality with torchmetrics on
random and degenerate inputs. The VAE's SSIM and FID still come from torchmetrics, imported where a VAE runs.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from icp.models import INCEPTION_FILE, INCEPTION_URL

HIGHER_IS_BETTER = {"top1": True, "macro_f1": True, "precision": True, "recall": True, "nll": False, "ece": False}
CLASSIFICATION = tuple(HIGHER_IS_BETTER)


ECE_BINS = 10


def _safe_divide(num: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """``num / denom`` in floating point, 0 where ``denom`` is 0 (torchmetrics' ``_safe_divide``)."""
    num, denom = num.float() if not num.is_floating_point() else num, denom.float() if not denom.is_floating_point() \
        else denom
    return torch.where(denom == 0, torch.zeros_like(num), num / torch.where(denom == 0, torch.ones_like(denom), denom))


def _macro(score: torch.Tensor, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Macro average over the classes that occur as a label or a prediction (torchmetrics'
    ``_adjust_weights_safe_divide``: a class with tp + fp + fn = 0 has weight 0)."""
    weights = torch.ones_like(score)
    weights[tp + fp + fn == 0] = 0.0
    return _safe_divide(weights * score, weights.sum(-1, keepdim=True)).sum(-1)


def calibration_error(confidences: torch.Tensor, accuracies: torch.Tensor, n_bins: int = ECE_BINS) -> torch.Tensor:
    """Expected calibration error, L1 over ``n_bins`` equal-width confidence bins weighted by their share of the
    images (Guo et al. 2017, Eq. 3; torchmetrics' ``_ce_compute`` with ``_binning_bucketize``)."""
    bounds = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype, device=confidences.device)
    index = torch.bucketize(confidences, bounds, right=True) - 1
    count, conf, acc = (torch.zeros(len(bounds), device=confidences.device, dtype=confidences.dtype)
                        for _ in range(3))
    count.scatter_add_(0, index, torch.ones_like(confidences))
    conf = torch.nan_to_num(conf.scatter_add_(0, index, confidences) / count)
    acc = torch.nan_to_num(acc.scatter_add_(0, index, accuracies.to(confidences.dtype)) / count)
    return torch.sum(torch.abs(acc - conf) * (count / count.sum()))


class EvalMetrics:
    """Accumulates an evaluation pass (a confusion matrix, the top-1 confidences and the summed NLL on the
    device); ``compute()`` returns plain floats and resets."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.k, self.device = num_classes, torch.device(device)
        self.reset()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        self.confusion += torch.bincount(target * self.k + predicted, minlength=self.k * self.k).view(self.k, self.k)
        self.confidences.append(confidence)
        self.correct.append(predicted.eq(target).float())
        nll = F.cross_entropy(logits, target, reduction="none")
        self.nll_sum += nll.sum()
        self.nll_n += nll.numel()

    def compute(self) -> dict[str, float]:
        c = self.confusion
        tp = c.diagonal()
        fp, fn = c.sum(0) - tp, c.sum(1) - tp
        out = {"top1": _safe_divide(tp.sum(), (tp + fn).sum()),
               "macro_f1": _macro(_safe_divide(2 * tp, 2 * tp + fn + fp), tp, fp, fn),
               "precision": _macro(_safe_divide(tp, tp + fp), tp, fp, fn),
               "recall": _macro(_safe_divide(tp, tp + fn), tp, fp, fn),
               "nll": self.nll_sum / self.nll_n,
               "ece": calibration_error(torch.cat(self.confidences), torch.cat(self.correct)) if self.confidences
               else torch.tensor(0.0)}
        self.reset()
        return {k: float(out[k]) for k in CLASSIFICATION}

    def reset(self) -> None:
        self.confusion = torch.zeros(self.k, self.k, dtype=torch.long, device=self.device)
        self.confidences: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.nll_sum = torch.zeros((), device=self.device)
        self.nll_n = torch.zeros((), device=self.device)


# ------------------------------------------------------------------------------------------ generative models
GENERATIVE_HIGHER_IS_BETTER = {"elbo": True, "recon": False, "kl": False, "ssim": True, "fid_recon": False,
                               "fid_prior": False}
HIGHER_IS_BETTER.update(GENERATIVE_HIGHER_IS_BETTER)


def headline(metrics: dict) -> tuple[str, float]:
    """The metric a progress line shows: test top-1 for a classifier, SSIM for a VAE."""
    for name in ("top1", "ssim", "elbo"):
        if metrics.get(name) is not None:
            return name, metrics[name]
    return "top1", float("nan")


HEADLINE_LABEL = {"top1": "top-1", "ssim": "SSIM", "elbo": "ELBO"}  # how a line names the headline metric


def headline_text(metrics: dict) -> str:
    """The headline metric as every line a person reads shows it, in the tables' units: ``top-1 72.70%``,
    ``SSIM 6.82%`` (fractions in %), ``ELBO -123.45``; ``top-1 -`` where nothing was evaluated."""
    name, value = headline(metrics)
    shown = "-" if value != value else f"{value:.2f}" if name == "elbo" else f"{100 * value:.2f}%"
    return f"{HEADLINE_LABEL.get(name, name)} {shown}"


class ClassifierFeatures(torch.nn.Module):
    """FID's feature network when Inception cannot be had: a classifier of this project (the ``ce`` ResNet-20
    of the same dataset), its penultimate layer (``feats["pool"]``). Takes images in [0, 1] (N, C, H, W), as
    torchmetrics' FID passes them with ``normalize=True``, and normalises them with the dataset statistics."""

    def __init__(self, classifier: torch.nn.Module, mean, std, name: str):
        super().__init__()
        self.classifier = classifier.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.num_features = int(classifier.classifier.in_features)
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if images.max() > 1.5:  # uint8 range
            images = images / 255.0
        _, feats = self.classifier((images - self.mean) / self.std, features=True)
        return feats["pool"].double()


# torch-fidelity's Inception-v3 (the TF-FID network ported to PyTorch), the weights published FIDs are computed with:
# INCEPTION_URL and INCEPTION_FILE (icp.models, torch-free, so that icp.preflight checks for it)


def inception_weights(spec: str) -> Path:
    """The Inception-v3 weights file that ``train.fid_features`` names: ``inception:PATH``, or ``inception``: the
    file in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, where torch-fidelity and torchmetrics keep it),
    downloaded there first if it is absent (a cluster node without internet: put the file there, or pass its
    path). Anything missing is a one-line :class:`icp.schema.ConfigError`."""
    from icp.schema import ConfigError

    _, _, given = spec.partition(":")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"train.fid_features: Inception weights {path} not found (get them from {INCEPTION_URL})")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, str(path), progress=False)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, disk: the same user action
            raise ConfigError(f"train.fid_features: Inception weights are not in {path} and could not be downloaded "
                              f"from {INCEPTION_URL} ({type(exc).__name__}); put the file there or set "
                              f"train.fid_features=inception:PATH") from None
    return path


class InceptionFeatures(torch.nn.Module):
    """FID's standard feature network: Inception-v3's 2048-d pool features as torch-fidelity computes them
    (torchmetrics' ``NoTrainInceptionV3``, the TF-FID port that published FIDs use), from a weights file
    (:func:`inception_weights`). Takes images in [0, 1] (N, C, H, W) as :class:`GenerativeMetrics` passes them,
    quantises them to uint8 the way torchmetrics' FID does with ``normalize=True`` (``(x * 255).byte()``),
    repeats a grey channel to RGB, and lets the network resize to 299×299."""

    num_features = 2048

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(self.num_features)],
                                      feature_extractor_weights_path=str(weights))
        self.name = f"inception-v3 pool3 2048 (torch-fidelity weights {weights})"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).byte()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).double()


def is_inception(spec: str) -> bool:
    """Whether ``train.fid_features`` names Inception (``inception`` or ``inception:PATH``) rather than a
    classifier run of this project."""
    return spec == "inception" or spec.startswith("inception:")


class GenerativeMetrics:
    """A VAE's test metrics, accumulated over an evaluation pass; ``compute()`` returns floats and resets.

    =========  ==================================================================================================
    recon      mean ½‖x̂ − x‖² per image (normalised input space; the decoder's unit-variance Gaussian NLL without
               its constant), reconstruction with z = μ
    kl         mean KL(q(z|x) ‖ N(0, I)) per image
    elbo       −(recon + kl): the evidence lower bound per image, up to the constant −½·D·log 2π
    ssim       SSIM of reconstructions against the images, both mapped back to [0, 1] (torchmetrics)
    fid_recon  FID between the reconstructions and the test images (``features``: the feature network)
    fid_prior  FID between as many prior samples z ~ N(0, I) (a fixed seed) and the test images
    =========  ==================================================================================================

    FIDs are null without a feature network. With this project's own classifier as the feature network
    (:class:`ClassifierFeatures`) they compare runs of this project only, never published FIDs; with
    :class:`InceptionFeatures` they are computed as published FIDs are (torch-fidelity's Inception-v3), though
    on this project's test split and sample count. The test images' features are computed once per evaluation
    and serve both FIDs. With ``fid_on`` False (``train.fid_every``) an evaluation skips FID and reports it null.
    """

    def __init__(self, mean, std, device: torch.device | str = "cpu", features: torch.nn.Module | None = None,
                 prior_seed: int = 0):
        from torchmetrics import MeanMetric
        from torchmetrics.image import StructuralSimilarityIndexMeasure

        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
        self.recon, self.kl = MeanMetric().to(self.device), MeanMetric().to(self.device)
        self.fid_recon = self.fid_prior = None
        if features is not None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            self.fid_recon = FrechetInceptionDistance(features, normalize=True).to(self.device)
            self.fid_prior = FrechetInceptionDistance(features, normalize=True).to(self.device)
        self.prior_seed = prior_seed
        self.fid_on = True  # off: this evaluation computes no FID (train.fid_every)
        self._model = None
        self._seen = 0

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images back to [0, 1]."""
        return (x.float() * self.std + self.mean).clamp(0, 1)

    @torch.no_grad()
    def update(self, model, x: torch.Tensor) -> None:
        out = model(x)
        recon, kl = model.terms(out, x)
        self.recon.update(recon)
        self.kl.update(kl)
        real, fake = self.to_unit(x), self.to_unit(out.recon)
        self.ssim.update(fake, real)
        if self.fid_recon is not None and self.fid_on:
            self.fid_recon.update(real, real=True)  # fid_prior takes these real features over in compute()
            self.fid_recon.update(fake, real=False)
        self._model = model
        self._seen += len(x)

    @torch.no_grad()
    def compute(self) -> dict[str, float | None]:
        recon, kl = float(self.recon.compute()), float(self.kl.compute())
        out = {"elbo": -(recon + kl), "recon": recon, "kl": kl, "ssim": float(self.ssim.compute()),
               "fid_recon": None, "fid_prior": None}
        if self.fid_recon is not None and self.fid_on and self._seen > 1:
            for state in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
                setattr(self.fid_prior, state, getattr(self.fid_recon, state).clone())  # the test images, once
            gen = torch.Generator().manual_seed(self.prior_seed)
            done = 0
            while done < self._seen:
                n = min(500, self._seen - done)
                self.fid_prior.update(self.to_unit(self._model.sample(n, gen)), real=False)
                done += n
            out["fid_recon"], out["fid_prior"] = float(self.fid_recon.compute()), float(self.fid_prior.compute())
        self.reset()
        return out

    def reset(self) -> None:
        for m in (self.ssim, self.recon, self.kl, self.fid_recon, self.fid_prior):
            if m is not None:
                m.reset()
        self._seen = 0
