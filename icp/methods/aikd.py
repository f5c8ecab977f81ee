"""Adversarial learning and Implicit regularisation for self-Knowledge Distillation (``aikd``): Kim, Kim, Kim &
Yoo, "AI-KD: Adversarial learning and Implicit regularization for self-Knowledge Distillation", arXiv 2211.10938,
Knowledge-Based Systems 293:111692, 2024. There is no official code, and the paper body was not available to us:
**everything below is our reconstruction** from the abstract and the issue that specifies it (issue #4), with
every choice marked.

Per step, on the augmented batch (x, y) with sample indices i and 0-based epoch t:

1. *Deterministic knowledge* (reconstruction): a frozen pre-trained model f_pre of the same architecture, trained
   beforehand with plain CE on the same training split (``teacher``: the ``ce`` run of the same dataset, scenario
   and seed — a pipeline dependency, not a download), run in eval mode without gradient on the *same* augmented
   batch as the student: p_pre = softmax(f_pre(x)).
2. *Progressive knowledge*: exactly PS-KD's per-sample memory p̂(t−1) of the previous epoch's train-mode
   predictions, written after the step from the pre-step logits (one-hot at epoch 0) — the shared
   :class:`icp.methods.pskd.ProgressiveTargets`, so the memory is method state in every checkpoint.
3. *Implicit distillation* (reconstruction): soft-target cross-entropy against
   ỹ = (1 − α_t)·onehot(y) + α_t·[β·p_pre + (1 − β)·p̂(t−1)],  α_t = α_T·(t + 1)/T as PS-KD (α_T = 0.8),
   β = 0.5. At epoch 0 p̂ is the one-hot label, so the target is (1 − α_0·β)·onehot + α_0·β·p_pre.
4. *Adversarial learning* (reconstruction): a discriminator D on class-probability vectors — an MLP
   K → 256 → 256 → 1 with LeakyReLU(0.2) (``disc_conditional``: input [p, onehot(y)] of size 2K instead) —
   with its own Adam (lr 2e-4, betas 0.5/0.999). Each step, inside ``forward_train``, D first takes one step on
   the non-saturating BCE loss BCE(D(p_pre), 1) + BCE(D(sg(p_s)), 0), p_s the student's softmax; then the
   student's loss gains λ_adv·BCE(D(p_s), 1) (non-saturating generator loss) with the *updated* D, λ_adv = 1.
   Isolation is structural: D's gradients are taken with ``torch.autograd.grad`` w.r.t. D's parameters only
   (so D's step writes no ``.grad`` anywhere else, and its inputs are detached), and the student's adversarial
   term evaluates D through ``torch.func.functional_call`` with *detached* copies of D's parameters, so the
   engine's backward cannot reach D. D runs in float32 outside autocast.
5. Inference and the shipped model: the student only (``eval_model``); D and f_pre are excluded from the
   engine's optimizer (``trainable_parameters`` = the student's parameters).

State and resume: D's weights and f_pre's weights are submodules, so they are in ``method.state_dict()`` and
thus in every ``last.pt``; D's Adam state is in ``extra_state``. A resumed run therefore continues with the
teacher weights it started with even if the file at ``teacher`` has been replaced since (the file must still
exist: the method is built, and the teacher checked, before the checkpoint is loaded). ``best.pt`` holds the
student only. f_pre stays in eval mode although the engine calls ``method.train()`` (``train`` is overridden),
has ``requires_grad=False``, and is never compiled.

``teacher``: a run directory (its ``best.pt`` if present, else ``last.pt``, which must be from a complete run)
or a checkpoint file of either format the engine writes (``best.pt``: key ``model``; ``last.pt``: the method
state with the model under ``model.``). Its config must name the same model (and dataset, where known) as this
run, and its weights must load into this run's model. Any problem is a one-line ``ConfigError`` raised when the
method is built, before the engine creates the run directory. Checkpoints are loaded with pickle
(``weights_only=False``): only point ``teacher`` at our own runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from icp.schema import ConfigError
from icp.methods.options import TEACHER_KEY, ProgressiveOptions, declare


@dataclass
class AIKDOptions(ProgressiveOptions):
    teacher: str = ""  # required: run directory or checkpoint of the pre-trained ce model (same model and data)
    beta: float = 0.5  # β: weight of the pre-trained model's prediction vs the previous-epoch memory
    adv_weight: float = 1.0  # λ_adv: weight of the student's adversarial (non-saturating) loss
    disc_hidden: int = 256  # width of the discriminator's two hidden layers
    disc_conditional: bool = False  # feed D [p, onehot(y)] instead of p (label-conditioned variant)
    disc_lr: float = 2e-4  # Adam learning rate of D
    disc_betas: list = field(default_factory=lambda: [0.5, 0.999])  # Adam betas of D

    def __post_init__(self):
        super().__post_init__()
        if not self.teacher.strip():
            raise ConfigError(f"{TEACHER_KEY}: required: the run directory or checkpoint of a pre-trained ce model "
                              "of the same model and data")
        checks = {"beta": (0.0 <= self.beta <= 1.0, "a number in [0, 1]"),
                  "adv_weight": (self.adv_weight >= 0, "a number >= 0"),
                  "disc_hidden": (self.disc_hidden >= 1, "an integer >= 1"),
                  "disc_lr": (self.disc_lr > 0, "a number > 0"),
                  "disc_betas": (len(self.disc_betas) == 2 and all(
                      isinstance(b, (int, float)) and 0 <= b < 1 for b in self.disc_betas), "two numbers in [0, 1)")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")

    cost_basis = "ce's step + the pre-trained teacher's forward (the discriminator's MLP on K probabilities not counted)"
    teacher_method = "ce"  # the pre-trained model: the cell's ce run; its training counts to AI-KD's cost

    def step_cost(self, epoch: int, epochs: int) -> float:
        """The student's ce step and the frozen teacher's forward of the same batch: 4/3 (the teacher's own training
        is a run of its own, added by :func:`icp.methods.options.training_cost`)."""
        return 4 / 3


declare({"aikd": AIKDOptions})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import copy

import torch
import torch.nn.functional as F
from torch import nn

from icp import checkpoint
from icp.methods import register
from icp.methods.base import Batch, MethodContext, TrainOutput
from icp.methods.pskd import ProgressiveSelfKD, soft_cross_entropy


def teacher_state(path: str, model_name: str = "", dataset: str = "") -> dict:
    """The pre-trained model's state_dict from a run directory or a ``best.pt``/``last.pt`` file, after checking
    that it is a finished run of ``model_name`` on ``dataset`` (each checked when given):
    :func:`icp.checkpoint.trained`."""
    return checkpoint.trained(path, TEACHER_KEY, complete=True, model=model_name, dataset=dataset).state


class Discriminator(nn.Module):
    """MLP on class-probability vectors: in → hidden → hidden → 1 logit, LeakyReLU(0.2)."""

    def __init__(self, num_classes: int, hidden: int = 256, conditional: bool = False):
        super().__init__()
        self.num_classes, self.conditional = num_classes, conditional
        self.net = nn.Sequential(nn.Linear(2 * num_classes if conditional else num_classes, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.conditional:
            probs = torch.cat([probs, F.one_hot(y, self.num_classes).to(probs.dtype)], 1)
        return self.net(probs).squeeze(1)


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


@register
class AdversarialImplicitKD(ProgressiveSelfKD):
    """AI-KD (Kim et al., KBS 2024), our reconstruction: PS-KD + a frozen pre-trained model + a discriminator."""

    name = "aikd"
    Options = AIKDOptions

    def __init__(self, model: nn.Module, options: AIKDOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        state = teacher_state(options.teacher, ctx.model_name, ctx.dataset)
        teacher = copy.deepcopy(model)
        try:
            teacher.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"{TEACHER_KEY}: its weights do not fit this run's model ({first})") from None
        self.teacher = teacher.requires_grad_(False).eval()
        self.disc = Discriminator(ctx.num_classes, options.disc_hidden, options.disc_conditional)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=options.disc_lr, betas=tuple(options.disc_betas))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the pre-trained model always predicts in eval mode
        return self

    def trainable_parameters(self):
        return list(self.model.parameters())

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step of D on BCE(D(real), 1) + BCE(D(fake), 0); gradients reach D's parameters only."""
        params = list(self.disc.parameters())
        loss = _bce(self.disc(real.detach(), y), True) + _bce(self.disc(fake.detach(), y), False)
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        self.disc_opt.step()
        self.disc_opt.zero_grad(set_to_none=True)
        return loss.detach()

    def frozen_disc(self, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D's logits with detached parameters: gradients flow to ``probs`` only, never into D."""
        detached = {k: v.detach() for k, v in self.disc.named_parameters()}
        return torch.func.functional_call(self.disc, detached, (probs, y))

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        o, y = self.options, batch.y
        logits = self.model(batch.x)
        with torch.no_grad():
            p_pre = self.teacher(batch.x).float().softmax(1)
        knowledge = o.beta * p_pre + (1 - o.beta) * self.progress.previous(batch.index)
        loss = soft_cross_entropy(logits, self.progress.target(y, knowledge, epoch))
        with torch.autocast(batch.x.device.type, enabled=False):
            p_s = logits.float().softmax(1)
            self.last_disc_loss = self.discriminator_step(p_pre, p_s, y)
            adv = o.adv_weight * _bce(self.frozen_disc(p_s, y), True)
        return TrainOutput(logits, {"aikd": loss, "adv": adv})

    def extra_state(self) -> dict:
        return {"disc_optimizer": self.disc_opt.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.disc_opt.load_state_dict(state["disc_optimizer"])
