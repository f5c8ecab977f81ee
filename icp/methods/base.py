"""The method interface every training method implements (one small class per file, as mdistiller's Distiller).

A method wraps the classifier and owns everything it adds: extra modules (auxiliary heads, a discriminator, a
frozen teacher), their optimizers, and per-sample state (e.g. PS-KD's memory of past predictions, kept as
buffers). The engine calls, per training step::

    out = method.forward_train(batch, epoch)      # under autocast; returns logits and named losses
    sum(out.losses.values()).backward(); optimizer.step()
    method.after_step(batch, out, epoch)          # e.g. write this batch's predictions into a memory

and saves ``method.state_dict()`` (model + method buffers/modules) and ``method.extra_state()`` (anything that
is not a tensor of a module, e.g. an extra optimizer's state) in every checkpoint, so resume is exact.

Hooks for the methods planned on top of this interface:

* ICP: extra forward/backward passes on the input inside ``forward_train`` (it may switch ``self.model`` to
  eval mode and back, and call ``torch.autograd.grad`` w.r.t. the input); ``model(x, features=True)`` gives the
  named feature taps.
* PS-KD / AI-KD: ``ctx.num_train`` sizes a per-sample memory; ``batch.index`` addresses it.
* BYOT: auxiliary heads are submodules of the method, so ``trainable_parameters`` includes them and
  ``eval_model`` (the bare classifier) excludes them from evaluation.
* CS-KD: ``batch_sampler`` replaces the engine's shuffling with paired same-class batches; ``TrainOutput.labels``
  says which labels the returned logits belong to (the anchor half).
* AI-KD: a frozen pre-trained model (``requires_grad_(False)``, excluded from ``trainable_parameters``) and a
  discriminator with its own optimizer stepped inside ``forward_train``; its state goes in ``extra_state``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Optional

import torch
from torch import nn

from icp.methods.options import NoOptions


@dataclass
class Batch:
    x: torch.Tensor  # (B, C, H, W) normalised float images on the training device
    y: torch.Tensor  # (B,) int64 training labels (noisy where a noise scenario applies)
    index: torch.Tensor  # (B,) int64 position of each sample in the training split (0..num_train-1)


@dataclass
class TrainOutput:
    logits: Optional[torch.Tensor]  # the classifier's logits on batch.x (training accuracy); None for a VAE
    losses: dict[str, torch.Tensor]  # named, already weighted: the engine back-propagates their sum
    # The labels ``logits`` are scored against, when they are not ``batch.y`` (CS-KD: the anchor half of a
    # paired batch). Their number is the step's count of training samples (loss averages, images/s).
    labels: Optional[torch.Tensor] = None
    # Diagnostics, not back-propagated: scalars whose per-sample mean over each epoch goes to the record's
    # ``epochs[i].diagnostics`` (ICP: alpha_e, mean |x_K - x|, per-layer feature MSE) for the figures.
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    num_classes: int
    num_train: int
    epochs: int
    steps_per_epoch: int
    device: torch.device
    train_labels: torch.Tensor  # (num_train,) training labels on the CPU, aligned with Batch.index
    run_dir: Optional[Path] = None
    input_shape: Optional[tuple[int, int, int]] = None  # (C, H, W) of a training input
    # per-channel (low, high) bounds of a valid image after normalisation: ((0 - mean) / std, (1 - mean) / std)
    input_range: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None
    model_name: str = ""  # config model.name ("" = unknown), e.g. to check a pre-trained model's checkpoint
    dataset: str = ""  # config data.dataset ("" = unknown)


class Method(nn.Module):
    """Base class: plain cross-entropy training. Subclasses override what they change."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    supports: ClassVar[tuple[str, ...]] = ("classifier",)  # model kinds it trains: classifier, generative

    def __init__(self, model: nn.Module, options, ctx: MethodContext):
        super().__init__()
        self.model = model
        self.options = options
        self.ctx = ctx

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        raise NotImplementedError

    def after_step(self, batch: Batch, out: TrainOutput, epoch: int) -> None:
        """Called after the optimizer step (no gradient)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of every epoch."""

    def batch_sampler(self, labels: torch.Tensor, batch_size: int, drop_last: bool,
                      generator: torch.Generator) -> Optional[Iterator[torch.Tensor]]:
        """Index batches for one epoch, or None for the engine's uniform shuffling."""
        return None

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters updated by the engine's optimizer."""
        return [p for p in self.parameters() if p.requires_grad]

    def eval_model(self) -> nn.Module:
        """The network evaluated and shipped: the bare classifier."""
        return self.model

    def extra_state(self) -> dict:
        """Non-module state for the checkpoint (e.g. an extra optimizer's state_dict)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name, "options": dataclasses.asdict(self.options)}
