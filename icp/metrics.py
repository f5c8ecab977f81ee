"""Evaluation metrics, computed with torchmetrics on the device and reset before every evaluation.

=========  ==========================================================================================
top1       micro-averaged accuracy (fraction correct)
macro_f1   F1 per class, averaged over classes
precision  macro-averaged precision
recall     macro-averaged recall
nll        mean negative log-likelihood of the true label (cross-entropy, nats)
ece        expected calibration error, 10 equal-width confidence bins, L1 (Guo et al. 2017)
=========  ==========================================================================================

All values are fractions in [0, 1] except ``nll``. Whether larger is better: :data:`HIGHER_IS_BETTER`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score,
                                         MulticlassPrecision, MulticlassRecall)

HIGHER_IS_BETTER = {"top1": True, "macro_f1": True, "precision": True, "recall": True, "nll": False, "ece": False}
CLASSIFICATION = tuple(HIGHER_IS_BETTER)


class EvalMetrics:
    """Accumulates logits/labels over an evaluation pass; ``compute()`` returns plain floats and resets."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        k = num_classes
        self.collection = MetricCollection({
            "top1": MulticlassAccuracy(k, average="micro"),
            "macro_f1": MulticlassF1Score(k, average="macro"),
            "precision": MulticlassPrecision(k, average="macro"),
            "recall": MulticlassRecall(k, average="macro"),
            "ece": MulticlassCalibrationError(k, n_bins=10, norm="l1"),
        }).to(device)
        self.nll = MeanMetric().to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        self.collection.update(logits.softmax(dim=1), target)
        self.nll.update(F.cross_entropy(logits, target, reduction="none"))

    def compute(self) -> dict[str, float]:
        out = {name: float(value) for name, value in self.collection.compute().items()}
        out["nll"] = float(self.nll.compute())
        self.reset()
        return {k: out[k] for k in CLASSIFICATION}

    def reset(self) -> None:
        self.collection.reset()
        self.nll.reset()


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

    FIDs are null without a feature network. With this project's own classifier as the feature network they
    compare runs of this project only, never published Inception FIDs.
    """

    def __init__(self, mean, std, device: torch.device | str = "cpu", features: torch.nn.Module | None = None,
                 prior_seed: int = 0):
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
        if self.fid_recon is not None:
            self.fid_recon.update(real, real=True)
            self.fid_recon.update(fake, real=False)
            self.fid_prior.update(real, real=True)
        self._model = model
        self._seen += len(x)

    @torch.no_grad()
    def compute(self) -> dict[str, float | None]:
        recon, kl = float(self.recon.compute()), float(self.kl.compute())
        out = {"elbo": -(recon + kl), "recon": recon, "kl": kl, "ssim": float(self.ssim.compute()),
               "fid_recon": None, "fid_prior": None}
        if self.fid_recon is not None and self._seen > 1:
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
