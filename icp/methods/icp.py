"""ICP: self-distillation via Iterative Constructive Perturbations (Dave et al., arXiv 2505.14751).

The paper is only partly public, and the authors' public repository (maheakdave/Self-Distillation-via-Iterative-
Constructive-Perturbations, ``Image Classification/train.py`` and ``utils.py``) is a later extension rather than
the paper's code. This module implements the specification agreed in the project's ICP issue. Every default
below says where it comes from: **[paper]**, **[authors]** (their code), or **[ours]**.

Per training batch (x, y) at 0-based epoch e of E (:meth:`ICP.forward_train`):

1. *Clean pass* (train mode). It gives logits z and the tapped features f_l(x). L_task = CE(z, y), optionally
   label-smoothed (``label_smoothing``).
2. *Warm-up* (epochs e < W). The step is plain cross-entropy and no refinement is computed. W = floor(warmup·E)
   as ``int(warmup_rate * epochs)`` **[authors]**; warmup = 0.25 **[paper: "k = 25" of 100 epochs]**.
3. *Refinement* (:func:`refine`). The model is in eval mode: BatchNorm uses its running statistics and dropout is
   off. Gradients are taken w.r.t. the input only (``torch.autograd.grad(loss, x_k)``), so no parameter, no
   ``.grad`` and no BN buffer changes. The loop, for k = 0..K-1:
   - g_k = ∇_x CE(f(x_k), y);
   - x_{k+1} = x_k − η·u_k, where u_k is one of:
     - ``sgd``: g_k;
     - ``adam``: bias-corrected Adam moments, β1 0.9, β2 0.999, ε 1e-8, state fresh per batch;
     - ``ademamix``: AdEMAMix (Pagliardini et al., 2024), (m̂1 + α·m2)/(√v̂ + ε), β3 0.9999, α 5, without the
       α/β3 warm-up schedulers, as **[authors]**. With K ≤ 10 the slow EMA m2 ≈ (1 − β3^k)·g stays
       ≤ 1e-3·|g|, so this variant behaves almost exactly like ``adam``. That is a property of the method at
       these step counts, not a bug.

   This *descends* the task loss, the opposite of FGSM. K = 5 **[paper]**. η = 0.002, the paper's ε
   **[paper]**; the authors' code passes its learning rate, 3e-4, as η (``step_size=3e-4`` reproduces that).

   The CE inside the loop uses the mean over the batch, ``nn.CrossEntropyLoss()`` **[authors]**. So ``sgd``
   steps scale with 1/B; ``reduction: sum`` gives per-sample gradients, independent of batch size **[ours]**.
   The ``adam`` and ``ademamix`` steps do not depend on this scale. There is no clamping by default
   **[authors]**; ``clamp: true`` keeps x_k inside the normalised image range **[ours]**.
4. *Target pass*: f_l(x_K) under ``torch.no_grad``, detached. ``target_mode``:
   - ``train`` **[authors]**: BatchNorm normalises x_K with its own batch statistics, and its running statistics
     receive a second momentum update per step, this one from the perturbed batch.
   - ``eval``: the running statistics are used and left unchanged. The target is then the same function of x_K
     that the refinement optimised.
5. *Loss*: L = α_e·L_task + (1 − α_e)·Σ_l w_l·MSE(f_l(x), sg(f_l(x_K))).
   - α_e = cos(π(e − W) / (2(E − W))) for e ≥ W (:func:`task_weight`, **[authors]** ``decay``). α_W = 1, so the
     first refined epoch only moves the BN statistics (in ``train`` target mode).
   - ``cosine`` layer weights: w_l = cos((l/(L−1))·arccos(cos π/4)), from 1 at the shallowest tap to cos(π/4)
     at the deepest (:func:`layer_weights`, **[authors]** ``cos_weights``). ``uniform``: w_l = 1.
   - MSE is the mean over all elements of each tap **[authors]** ``nn.MSELoss()``.
   - The taps are every stage output of the model (``model.feature_names``) **[ours]**: the authors tap ResNet-50
     stages. Gradient clipping at norm 5 **[authors]** is the engine's ``train.grad_clip`` (the shipped ICP
     configs set it).

*Generative models* (the paper's VAE experiment; ``model.name: vae``). The same code with the VAE objective as
the task loss (:meth:`icp.models.vae.ConvVAE.objective`, recon + β·KL) and the clean input as the target: L_task is
the objective of the clean pass (train mode, sampled z), and the refinement lowers the objective of reconstructing
the *clean* x from x_k, with the model in eval mode, where z = μ (no sampling inside the refinement; the KL term of
μ(x_k), σ(x_k) is part of the refined loss). The distilled taps are the encoder stages. These choices are
**[ours]**: the paper does not specify them. ``reuse_clean_grad`` is refused for a VAE.

The losses returned to the engine are already weighted: ``task`` = α_e·L_task, ``distill`` = (1 − α_e)·Σ w_l·MSE.

*K = 0, the α-only control* **[ours]**: with ``steps: 0`` nothing is refined and nothing is distilled; the loss is
α_e·L_task alone, with the same warm-up and α schedule. It measures how much of a difference to plain CE comes
from re-weighting the task loss (with weight decay unscaled, α_e → 0.016 at the last epoch lowers the effective
learning rate of the task gradient) rather than from the refinement. No target pass runs either: in ``train``
target mode it would only give BatchNorm a second momentum update per step, and in ``eval`` mode it would distil
train-mode towards eval-mode features of the same x, neither of which is a re-weighting.

Bugs in the authors' code that are *not* reproduced (tests check that each is absent):

- an extra ``loss.backward()`` on the eval-mode CE before the refinement loop, which adds eval-mode weight
  gradients to the update (off by default; ``authors_eval_ce: true`` reproduces it, below);
- ``AdemamixInvFGSM.forward`` returns ``None``;
- validation on the training split;
- torchmetrics that are never reset.

Their loop also runs one forward more than it uses (K + 1 forwards for K steps). The schedule above uses K
forward + input-gradient passes: (2K + 4)/3 CE steps in FLOPs.

``ifgsm`` (the paper's Figure 1 contrast) is the same loop *ascending* the loss with sign steps:
x_{k+1} = x_k + ε·sign(g_k), ε = ``step_size`` = 0.002. It keeps the same distillation loss, so constructive
against destructive is one switch: ``method.name: ifgsm``.

*Their objective*, ``authors_eval_ce`` (off by default) **[authors]**: their ``train.py`` (``Trainer._run_epoch``),
after warm-up only, puts the model in eval mode, computes CE(f(x), y) of the clean batch and calls
``loss.backward()`` on it before the refinement loop, without zeroing the gradients afterwards, so its weight
gradients (BatchNorm on its running statistics, dropout off) add with weight 1 to those of the training loss,
before clipping and the optimizer step. The update then follows

    ∇_θ [α_e·L_task + (1 − α_e)·Σ_l w_l·MSE_l] + ∇_θ CE_eval(f(x), y),

whose CE weight is 1 + α_e, never below 1, while α_e → 0 (the distillation term's weight stays 1 − α_e). With
``authors_eval_ce: true`` this method does the same: after the clean pass and before the refinement, one
eval-mode forward of the clean batch (the options' label smoothing applies; a VAE's objective for a VAE), its
backward into the parameters' ``.grad``, where the engine's backward of the returned losses accumulates. Its
value is recorded as the ``eval_ce`` statistic, not as a loss. It adds one forward and one backward after warm-up
(+1 ce step; in their code the same forward also gives the first refinement step's input gradient, here it is a
pass of its own). With ``steps: 0`` it is the α-only control plus this term: it tells whether a gain comes
from the full-weight CE rather than from the refinement.

Opt-in deviations, off by default and not in the paper:

- ``reuse_clean_grad``: the "free adversarial training" trick (Shafahi et al., NeurIPS 2019). One backward of
  α·L_task gives both this term's weight gradients and ∇_x L_task. That input gradient (train-mode BN, divided
  by α) serves as g_0, which saves one forward and input-backward per step.
- ``warm_start``: each sample starts from its previous refined perturbation, x_0 = x + δ_i, and stores
  δ_i = x_K − x. δ is a (N, C, H, W) float32 buffer saved in the checkpoint (188 MB for Fashion-MNIST). It is
  added to the current augmented view as it is, so under crops and flips it is offset from where it was found.

Speed: on CUDA the refinement loop and the target pass are captured once per input shape as one CUDA graph
(``cuda_graph``, default on) and replayed every step. A replay runs the same kernels as the eager code, without
the roughly 2K·60 kernel launches that make eager ICP launch-bound; ``tools/gpu_check_icp.py`` compares the two.
Both passes call ``model.forward``, so a model compiled by ``train.compile`` is compiled for the clean pass only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from icp.schema import ConfigError
from icp.methods.options import ICP_PRESETS, Cost, declare


@dataclass
class ICPOptions(Cost):
    optimizer: Literal["sgd", "adam", "ademamix", "ifgsm"] = "sgd"  # input update rule u_k (ifgsm ascends)
    steps: int = 5  # K refinement steps [paper]
    step_size: float = 0.002  # η (paper's ε = 0.002); the authors' code uses 3e-4
    warmup: float = 0.25  # W = floor(warmup·E) epochs of plain CE [paper/authors]
    layer_weights: Literal["cosine", "uniform"] = "cosine"
    layers: list = field(default_factory=list)  # feature taps to distil; [] = every stage output
    target_mode: Literal["train", "eval"] = "train"  # model mode of the target pass [authors: train]
    clamp: bool = False  # keep x_k inside the normalised [0, 1] image range [ours]
    reduction: Literal["mean", "sum"] = "mean"  # CE reduction inside the refinement [authors: mean]
    label_smoothing: float = 0.0  # task loss CE(z, y) label smoothing (0 = plain CE)
    beta1: float = 0.9  # adam / ademamix
    beta2: float = 0.999  # adam / ademamix
    beta3: float = 0.9999  # ademamix slow EMA
    ademamix_alpha: float = 5.0  # ademamix mixing coefficient α
    eps: float = 1e-8  # adam / ademamix
    reuse_clean_grad: bool = False  # deviation: g_0 from the clean pass's backward ("free AT")
    warm_start: bool = False  # deviation: start from each sample's previous perturbation
    cuda_graph: bool = True  # on CUDA, replay the refinement loop as one captured graph
    authors_eval_ce: bool = False  # [authors' code] after warm-up, + the eval-mode CE's weight gradient (weight 1)

    def __post_init__(self):
        def bad(key, expected, value):
            return ConfigError(f"method.options.{key}: expected {expected}, got {value!r}")

        if self.steps < 0:
            raise bad("steps", "an integer >= 0", self.steps)
        if not self.step_size >= 0:
            raise bad("step_size", "a number >= 0", self.step_size)
        if not 0.0 <= self.warmup <= 1.0:
            raise bad("warmup", "a fraction of the epochs in [0, 1]", self.warmup)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", "a number in [0, 1)", self.label_smoothing)
        for key in ("beta1", "beta2", "beta3"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise bad(key, "a number in [0, 1)", getattr(self, key))
        if not self.eps > 0:
            raise bad("eps", "a number > 0", self.eps)
        if self.reuse_clean_grad and self.warm_start:
            raise bad("reuse_clean_grad", "false with warm_start (the clean pass's gradient is taken at x, "
                      "not at the warm-started x + δ)", self.reuse_clean_grad)
        if not all(isinstance(name, str) for name in self.layers):
            raise bad("layers", "a list of feature tap names", self.layers)

    # with K = 0 a variant refines nothing and distils nothing (the α-only control): only these options still act
    alpha_only_options = ("steps", "warmup", "label_smoothing", "authors_eval_ce")  # and the eval-mode CE term

    @classmethod
    def canonical(cls, options: dict):
        """ICP with ``steps: 0`` (the α-only control) is one run whatever its input optimizer and refinement options:
        ``icp`` with the options that still act (:attr:`alpha_only_options`)."""
        if options.get("steps") == 0:
            return "icp", {k: v for k, v in options.items() if k in cls.alpha_only_options}
        return None

    # icp grid --cost (Cost): the options that change a step's time, the one counting its passes, the methods alike
    cost_options = ("steps", "reuse_clean_grad", "cuda_graph", "warm_start", "authors_eval_ce")
    pass_count, family = ("steps", "K"), "icp"
    cost_basis = ("ce's forward + backward, then after warm-up K refinement steps (forward + input gradient), a target "
                  "forward and with authors_eval_ce an eval-mode forward + backward")

    def step_cost(self, epoch: int, epochs: int) -> float:
        """A ce step during warm-up (epochs e < floor(warmup·E)) and with ``steps: 0``; after it the clean pass (3
        thirds), K forward + input-gradient passes (2 thirds each; one fewer with ``reuse_clean_grad``, whose g_0
        comes from the clean backward) and the target forward (1 third): (2K + 4)/3 ce steps (icp/methods/icp.py).
        ``authors_eval_ce`` adds its eval-mode forward + backward after warm-up, one ce step (with ``steps: 0``
        too), as the authors' code runs it only after warm-up."""
        if epoch < int(self.warmup * epochs):
            return 1.0
        extra = 1.0 if self.authors_eval_ce else 0.0
        if self.steps == 0:
            return 1.0 + extra
        passes = self.steps - (1 if self.reuse_clean_grad else 0)
        return (2 * passes + 4) / 3 + extra


def _preset_options(method_name: str, input_optimizer: str) -> type:
    return dataclass(type(f"{method_name.title().replace('-', '')}Options", (ICPOptions,),
                          {"__annotations__": {"optimizer": ICPOptions.__annotations__["optimizer"]},
                           "optimizer": input_optimizer}))


PRESET_OPTIONS = {name: _preset_options(name, optimizer) for name, optimizer in ICP_PRESETS.items()}


declare({"icp": ICPOptions, **PRESET_OPTIONS})  # the torch-free registry (icp grid, the Snakefile) reads this file up to here


import contextlib
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from icp.methods import register
from icp.methods.base import Batch, Method, MethodContext, TrainOutput
from icp.methods.options import layer_weights


def task_weight(epoch: int, warmup_epochs: int, epochs: int) -> float:
    """α_e: 1 during warm-up, then cos(π(e − W) / (2(E − W))) (authors' ``decay``; 0-based epoch e)."""
    if epoch < warmup_epochs or epochs <= warmup_epochs:
        return 1.0
    return math.cos(math.pi * (epoch - warmup_epochs) / (2 * (epochs - warmup_epochs)))


def refine(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, o: ICPOptions,
           bounds: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
           g0: Optional[torch.Tensor] = None, task: Optional[Callable] = None) -> torch.Tensor:
    """K input-update steps on the task loss L(model(x_k), y), returning x_K detached (the "constructive
    perturbation"). ``task(output, y, reduction)`` is that loss; the default is CE(model(x_k), y) with the
    options' label smoothing. A VAE passes its objective with y = the clean input (:class:`ICP`).

    The model must already be in the mode the caller wants (eval for ICP). Only the input receives gradients:
    ``torch.autograd.grad`` w.r.t. x_k neither computes nor accumulates any parameter gradient. ``g0`` replaces
    the first gradient (``reuse_clean_grad``). Plain tensor code only, with no host synchronisation, so it can
    be captured as a CUDA graph.
    """
    xk = x0.detach()
    m1 = m2 = v = None
    for k in range(o.steps):
        if k == 0 and g0 is not None:
            g = g0
        else:
            xk = xk.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model.forward(xk)
                loss = (task(out, y, o.reduction) if task is not None else
                        F.cross_entropy(out, y, reduction=o.reduction, label_smoothing=o.label_smoothing))
                (g,) = torch.autograd.grad(loss, xk)
        xk = xk.detach()
        if o.optimizer == "ifgsm":
            xk = xk + o.step_size * g.sign()
        elif o.optimizer == "sgd":
            xk = xk - o.step_size * g
        else:
            t = k + 1
            m1 = (1 - o.beta1) * g if m1 is None else o.beta1 * m1 + (1 - o.beta1) * g
            v = (1 - o.beta2) * g * g if v is None else o.beta2 * v + (1 - o.beta2) * g * g
            m_hat = m1 / (1 - o.beta1 ** t)
            denom = (v / (1 - o.beta2 ** t)).sqrt() + o.eps
            if o.optimizer == "adam":
                xk = xk - o.step_size * m_hat / denom
            else:  # ademamix: slow EMA m2 without bias correction, mixed in with weight α
                m2 = (1 - o.beta3) * g if m2 is None else o.beta3 * m2 + (1 - o.beta3) * g
                xk = xk - o.step_size * (m_hat + o.ademamix_alpha * m2) / denom
        if bounds is not None:
            xk = torch.maximum(torch.minimum(xk, bounds[1]), bounds[0])
    return xk.detach()


class _Graphed:
    """A method's ``fn(x0, y, g0) -> (x_K, {tap: target})`` captured as one CUDA graph per input signature
    (shape, strides, dtype, with-g0, autocast) and replayed.

    The graph reads parameters and BN buffers by address. The engine's optimizer and ``load_state_dict`` update
    them in place, so a replay always sees the current weights, and a train-mode target pass updates the BN
    running statistics in place on every replay exactly as the eager pass does. The warm-up runs before capture
    would also update them, so the model's buffers are restored afterwards. Outputs are static tensors,
    overwritten by the next replay; the method consumes them within the step.
    """

    def __init__(self, model: torch.nn.Module, fn, max_graphs: int = 4):
        self.model, self.fn = model, fn
        self.graphs: dict = {}
        self.max_graphs = max_graphs

    def __call__(self, x0, y, g0):
        key = (tuple(x0.shape), x0.stride(), x0.dtype, g0 is not None, torch.is_autocast_enabled())
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:  # e.g. ever-changing batch sizes: stay eager
                return self.fn(x0, y, g0)
            entry = self.graphs[key] = self._capture(x0, y, g0)
        graph, sx, sy, sg, out = entry
        sx.copy_(x0)
        sy.copy_(y)
        if g0 is not None:
            sg.copy_(g0)
        graph.replay()
        return out

    def _capture(self, x0, y, g0):
        sx, sy = x0.detach().clone(), y.clone()
        sg = g0.detach().clone() if g0 is not None else None
        autocast = contextlib.nullcontext()
        if torch.is_autocast_enabled():  # autocast's weight-cast cache must be off while capturing
            get_dtype = getattr(torch, "get_autocast_dtype", None)
            dtype = get_dtype("cuda") if get_dtype else torch.get_autocast_gpu_dtype()
            autocast = torch.autocast("cuda", dtype=dtype, cache_enabled=False)
        buffers = [(b, b.clone()) for b in self.model.buffers()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast:  # warm-up: cuDNN algorithm search, allocator
            for _ in range(3):
                self.fn(sx, sy, sg)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # through .data: no version bump, so the clean pass's saved BN inputs stay valid
            for b, saved in buffers:
                b.data.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast:
            out = self.fn(sx, sy, sg)
        return graph, sx, sy, sg, out


@register
class ICP(Method):
    """Iterative Constructive Perturbation self-distillation (module docstring: equations and provenance)."""

    name = "icp"
    Options = ICPOptions

    def __init__(self, model, options: ICPOptions, ctx: MethodContext):
        super().__init__(model, options, ctx)
        taps = tuple(getattr(model, "feature_names", ()))
        self.layers = list(options.layers) or list(taps)
        unknown = [name for name in self.layers if name not in taps and name != "pool"]
        if unknown or not self.layers:
            raise ConfigError(f"method.options.layers: unknown feature tap(s) {unknown} for this model; "
                              f"valid: {', '.join(taps + ('pool',))}")
        self.weights = layer_weights(options.layer_weights, len(self.layers))
        self.generative = bool(getattr(model, "generative", False))
        if self.generative and options.reuse_clean_grad:
            raise ConfigError("method.options.reuse_clean_grad: not for a generative model (the clean pass's "
                              "input gradient also flows through its reconstruction target)")
        self.warmup_epochs = int(options.warmup * ctx.epochs)
        if options.clamp:
            if ctx.input_range is None:
                raise ConfigError("method.options.clamp: the dataset gives no input range to clamp to")
            lo, hi = (torch.tensor(b, dtype=torch.float32).view(1, -1, 1, 1) for b in ctx.input_range)
            self.register_buffer("lo", lo, persistent=False)
            self.register_buffer("hi", hi, persistent=False)
        if options.warm_start:
            if ctx.input_shape is None:
                raise ConfigError("method.options.warm_start: the input shape is unknown")
            self.register_buffer("delta", torch.zeros(ctx.num_train, *ctx.input_shape))
        self._graphed: Optional[_Graphed] = None

    supports = ("classifier", "generative")

    def task_loss(self, out, y: torch.Tensor) -> torch.Tensor:
        """CE(z, y) for a classifier; for a VAE its objective recon + β·KL against y = the clean input."""
        if self.generative:
            return self.model.objective(out, y)
        return F.cross_entropy(out, y, label_smoothing=self.options.label_smoothing)

    def _refine_task(self, out, y: torch.Tensor, reduction: str) -> torch.Tensor:
        return self.model.objective(out, y, reduction)

    def _authors_eval_ce(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``authors_eval_ce``: the eval-mode task loss of the clean batch, back-propagated now (weight 1) into the
        parameters' ``.grad``, where the engine's backward accumulates; returns it as the ``eval_ce`` statistic.
        Done before the refinement and the target pass, as in the authors' code: its graph holds the running
        statistics that a train-mode target pass then updates in place."""
        was_training = self.model.training
        self.model.eval()
        try:
            loss = self.task_loss(self.model.forward(x.detach()), y)
            loss.backward()
        finally:
            self.model.train(was_training)
        return {"eval_ce": loss.detach().float()}

    def alpha(self, epoch: int) -> float:
        return task_weight(epoch, self.warmup_epochs, self.ctx.epochs)

    def _start(self, x: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        """x_0: the batch, or with ``warm_start`` the batch plus each sample's stored perturbation."""
        x0 = x.detach()
        if self.options.warm_start and index is not None:
            x0 = x0 + self.delta[index].to(x0.dtype)
            if self.options.clamp:
                x0 = torch.maximum(torch.minimum(x0, self.hi), self.lo)
        return x0

    def _remember(self, x: torch.Tensor, xk: torch.Tensor, index: Optional[torch.Tensor]) -> None:
        if self.options.warm_start and index is not None:
            self.delta[index] = (xk - x.detach()).to(self.delta.dtype)

    def _refine(self, x0: torch.Tensor, y: torch.Tensor, g0: Optional[torch.Tensor]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return refine(self.model, x0, y, self.options, (self.lo, self.hi) if self.options.clamp else None, g0,
                          self._refine_task if self.generative else None)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _target(self, xk: torch.Tensor) -> dict[str, torch.Tensor]:
        was_training = self.model.training
        self.model.train(self.options.target_mode == "train")
        try:
            _, feats = self.model.forward(xk, features=True)
        finally:
            self.model.train(was_training)
        return {name: feats[name].detach() for name in self.layers}

    def _refine_and_target(self, x0, y, g0):
        xk = self._refine(x0, y, g0)
        return xk, self._target(xk)

    def refined_input(self, x: torch.Tensor, y: torch.Tensor, index: Optional[torch.Tensor] = None,
                      g0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_K for the batch (eager), computed with the model in eval mode; the model's mode is restored."""
        xk = self._refine(self._start(x, index), y, g0)
        self._remember(x, xk, index)
        return xk

    def target_features(self, xk: torch.Tensor) -> dict[str, torch.Tensor]:
        """The detached distillation targets f_l(x_K), with the model in ``target_mode`` (eager)."""
        return self._target(xk)

    def refine_and_target(self, x: torch.Tensor, y: torch.Tensor, index: Optional[torch.Tensor] = None,
                          g0: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(x_K, targets): on CUDA one graph replay of the refinement and the target pass, otherwise eager.

        Both passes call ``model.forward``, so under ``train.compile`` only the clean pass is compiled (a
        compiled train-mode pass between the clean pass and its backward would overwrite the clean features in
        the compiler's own CUDA graphs)."""
        x0 = self._start(x, index)
        if self.options.cuda_graph and x0.is_cuda:
            if self._graphed is None:
                self._graphed = _Graphed(self.model, self._refine_and_target)
            xk, target = self._graphed(x0, y, g0)
        else:
            xk, target = self._refine_and_target(x0, y, g0)
        self._remember(x, xk, index)
        return xk, target

    def forward_train(self, batch: Batch, epoch: int) -> TrainOutput:
        # the task's target: the label, or for a VAE the clean input it reconstructs (also inside the refinement)
        y = batch.x.detach() if self.generative else batch.y
        if epoch < self.warmup_epochs:  # warm-up: the plain task loss, no refinement at all
            out = self.model(batch.x)
            return TrainOutput(None if self.generative else out, {"task": self.task_loss(out, y)},
                               stats={"alpha": batch.x.new_ones((), dtype=torch.float32)})
        o, alpha = self.options, self.alpha(epoch)
        if o.steps == 0:  # the α-only control: the α-weighted task loss, no refinement, no target, no distillation
            out = self.model(batch.x)
            extra = self._authors_eval_ce(batch.x, y) if o.authors_eval_ce else {}
            return TrainOutput(None if self.generative else out, {"task": alpha * self.task_loss(out, y)},
                               stats={"alpha": batch.x.new_full((), alpha, dtype=torch.float32),
                                      "input_shift": batch.x.new_zeros((), dtype=torch.float32), **extra})
        x = batch.x.detach().requires_grad_(True) if o.reuse_clean_grad else batch.x
        logits, feats = self.model(x, features=True)
        task = self.task_loss(logits, y)
        extra = self._authors_eval_ce(batch.x, y) if o.authors_eval_ce else {}
        g0 = None
        if o.reuse_clean_grad and o.steps > 0:
            # One backward gives the task term's weight gradients (accumulated for the engine's step) and
            # ∇_x L_task; the engine then back-propagates only the distillation term.
            (alpha * task).backward(retain_graph=True)
            g0 = x.grad.detach() / alpha
            if o.reduction == "sum":
                g0 = g0 * len(batch.y)
            task = task.detach()
        xk, target = self.refine_and_target(batch.x, y, batch.index, g0)
        mse = [F.mse_loss(feats[name], target[name]) for name in self.layers]  # autocast runs both in fp32
        distill = sum(w * m for w, m in zip(self.weights, mse))
        with torch.no_grad():
            stats = {"alpha": batch.x.new_full((), alpha, dtype=torch.float32),
                     "input_shift": (xk - batch.x).abs().float().mean(),  # mean |x_K - x|, normalised units
                     **{f"feature_mse.{name}": m.detach() for name, m in zip(self.layers, mse)}, **extra}
        losses = {"task": alpha * task, "distill": (1 - alpha) * distill}
        return TrainOutput(None if self.generative else logits, losses, stats=stats)


def _preset(method_name: str, doc: str) -> type[ICP]:
    """ICP under a preset's name (:data:`icp.methods.options.ICP_PRESETS`), with that preset's Options."""
    return register(type(f"ICP_{ICP_PRESETS[method_name]}", (ICP,), {"name": method_name,
                                                                     "Options": PRESET_OPTIONS[method_name], "__doc__": doc}))


ICPSGD = _preset("icp-sgd", "ICP with raw input-gradient steps (``optimizer: sgd``).")
ICPAdam = _preset("icp-adam", "ICP with Adam input steps (``optimizer: adam``).")
ICPAdEMAMix = _preset("icp-ademamix", "ICP with AdEMAMix input steps (``optimizer: ademamix``).")
IFGSM = _preset("ifgsm", "Destructive contrast (paper Fig. 1): ascending sign steps, same distillation.")
