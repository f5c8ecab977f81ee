"""Self-Distillation from the Last Mini-Batch (``dlb``): Shen, Xu, Yang, Li & Guo, "Self-Distillation from the Last
Mini-Batch for Consistency Regularization", CVPR 2022 (arXiv 2203.16172). Official code:
https://github.com/Meta-knowledge-Lab/DLB (``dlb.py``: ``train_one_epoch``; ``my_dataloader.py``: every training
image is loaded as ``aug_nums = 2`` independently augmented views).

Step t feeds the B new samples of its mini-batch *and* the B new samples of step t − 1 (a fresh augmentation of
them); the predictions the network made at step t − 1 for those samples, softened at temperature T, are the
targets of a KD term (the paper's DLB objective, Sec. 3; the formula below is the official ``train_one_epoch``,
which we follow term by term; the paper's equation numbers were not checked here, its text not being at hand):

    L = CE([z_prev; z_new], [y_prev; y_new]) + α·T²·(1/B_prev) Σ_i KL(softmax(z̄_i / T) ‖ softmax(z_prev,i / T)),

where z_new are the logits of the new samples, z_prev the logits of the last batch's samples in their new view, and
z̄ the logits of those samples at step t − 1 (recorded then, before that step's update, and used detached). The CE
is one mean over the 2B images; the KL is ``KLDivLoss(reduction='batchmean') · T²``. As in the official code the two
halves go through the network in two forward passes in train mode (each normalised by its own BatchNorm
statistics), and both get gradients. The run's very first step has no last batch: plain CE on its new samples
(the ``kd`` term is 0 there). The last batch of an epoch teaches the first step of the next one (the official code
carries ``pre_data``/``pre_out`` across epochs, and so do we).

T = 3 and α = 1: the official ``dlb.py`` gives ``--T`` and ``--alpha`` no defaults (its default experiment name,
``TP3_0.5``, hints at T = 3); τ = 3, α = 1 are the paper's implementation details as we recall them (Sec. 4.1), not
checked against its text here: check them before a study relies on α.

Batches (:meth:`LastMiniBatchSelfKD.batch_sampler`): the new samples are ``ce``'s shuffled pass over the training
split (the same order ``ce`` draws from the engine's per-epoch generator); each index batch the loader sees is the
step's B new indices followed by the last step's new indices, so the loader gives the repeated samples a fresh
augmentation, the official second view. ``data.drop_last`` applies to the new samples.

State across steps, epochs and a resume: the method keeps the indices and the (float32, detached) logits of the
last step's new samples. They are not module buffers (their shape changes with a smaller last batch): they go in
the checkpoint through :meth:`extra_state` and come back with :meth:`load_extra_state`, so the first step of a
resumed epoch distils from exactly the predictions the uninterrupted run would use (tests/test_dlb.py checks it).

Bookkeeping: the method returns the new samples' logits and labels (``TrainOutput.labels``), so training accuracy
(as the official ``accuracy(out, label)``), loss averages and the engine's images/s count the B new samples per
step, i.e. an epoch counts each training sample once. DLB forwards and back-propagates 2B images per step, which
shows as half ``ce``'s images/s at the same batch size and number of steps.

Deviations: none in the loss. The official loader draws both views of an image when the image is first loaded;
we draw the second view when the image is fed again (the same distribution: independent augmentations).
"""
from __future__ import annotations

from dataclasses import dataclass

from icp.config import ConfigError
from icp.methods.options import Cost, declare


@dataclass
class DLBOptions(Cost):
    temperature: float = 3.0  # T of the KD from the last mini-batch's predictions (paper: 3)
    alpha: float = 1.0  # α, weight of the KD term (paper: 1)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError(f"method.options.temperature: expected a number > 0, got {self.temperature!r}")
        if not self.alpha >= 0:
            raise ConfigError(f"method.options.alpha: expected a number >= 0, got {self.alpha!r}")

    cost_basis = "ce's step on the B new samples + forward and backward of the last step's B samples"

    def step_cost(self, epoch: int, epochs: int) -> float:
        """Two ce steps of B images (the new samples and the last step's, each forward + backward): 2 (the run's
        very first step, which has no last batch, costs 1; not counted)."""
        return 2.0


declare({"dlb": DLBOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from icp import loaders
from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput


@register
class LastMiniBatchSelfKD(Method):
    """DLB (Shen et al., CVPR 2022): distil each step's predictions into the next step's view of the same samples."""

    name = "dlb"
    Options = DLBOptions

    def __init__(self, model, options: DLBOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        self.last_index: Optional[torch.Tensor] = None  # (B',) the last step's new samples
        self.last_logits: Optional[torch.Tensor] = None  # (B', K) their logits at that step, float32, detached

    def batch_sampler(self, labels: torch.Tensor, batch_size: int, drop_last: bool,
                      generator: torch.Generator) -> Iterator[torch.Tensor]:
        new = loaders.default_index_batches(len(labels), batch_size, drop_last, generator)
        previous = [None if self.last_index is None else self.last_index.cpu(), *new[:-1]]
        return iter([b if p is None else torch.cat([b, p]) for b, p in zip(new, previous)])

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o, t = self.options, self.options.temperature
        m = 0 if self.last_logits is None else len(self.last_logits)  # the last step's samples, at the end
        b = len(batch.y) - m
        y = batch.y[:b]
        logits = self.model(batch.x[:b])
        if m == 0:
            ce = F.cross_entropy(logits.float(), y)
            return TrainOutput(logits, {"ce": ce, "kd": torch.zeros_like(ce)}, labels=y)
        prev_logits = self.model(batch.x[b:])
        ce = F.cross_entropy(torch.cat([prev_logits, logits]).float(), torch.cat([batch.y[b:], y]))
        kd = F.kl_div((prev_logits.float() / t).log_softmax(1), (self.last_logits / t).softmax(1),
                      reduction="batchmean") * t * t
        return TrainOutput(logits, {"ce": ce, "kd": o.alpha * kd}, labels=y)

    def after_step(self, batch: Batch, out: TrainOutput, epoch: int) -> None:
        b = len(out.labels)
        self.last_index = batch.index[:b].clone()
        self.last_logits = out.logits.detach().float().clone()

    def extra_state(self) -> dict:
        if self.last_index is None:
            return {}
        return {"last_index": self.last_index.cpu(), "last_logits": self.last_logits.cpu()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.last_index = state["last_index"].long()
            self.last_logits = state["last_logits"].float().to(self.ctx.device)
