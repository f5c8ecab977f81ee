"""Every method's name and options, without torch: the half of the method registry that grid expansion and config
validation read (the Snakefile imports no torch). The methods themselves, torch modules, are in this package's
other files; each takes its ``Options`` from here, and :func:`icp.methods.register` refuses a method whose name and
``Options`` are not in :data:`OPTIONS`.

An ``Options`` dataclass documents a method's options (fields with defaults) and checks their values
(``__post_init__``, a one-line ``ConfigError`` naming the key); the method's file explains what they do.

**Training cost.** Every ``Options`` declares what one training step costs in FLOPs, in units of a plain ``ce``
step of the same model and batch (:meth:`Cost.step_cost`, a function of the options and the epoch), counting a
forward pass as 1/3 and a backward pass (weight and input gradients) as 2/3 of a ``ce`` step, the usual
1 : 2 forward : backward FLOP ratio. :func:`training_cost` sums it over a run's epochs; the grid's compute-matched
control (``ce+budget=METHOD``) trains as many ``ce`` epochs as the run it matches costs, whatever that method is
(:func:`icp.grid.expand`), and the compute figure's x-axis is the same sum. Costs are FLOPs, the same on every
machine, never a step-time ratio of one GPU (where launch overheads, CUDA graphs or compilation differ by method).
What a cost leaves out is said where it is declared (small heads, the discriminator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from icp.config import ConfigError


class Cost:
    """The training cost a method declares (see the module docstring): one ``ce`` step unless overridden."""

    cost_basis = "forward + backward of the model, as ce"

    def step_cost(self, epoch: int, epochs: int) -> float:
        """FLOPs of one training step at ``epoch`` (0-based) of ``epochs``, in ``ce`` steps of the same batch."""
        return 1.0


@dataclass
class NoOptions(Cost):
    """This method takes no options."""


@dataclass
class LSOptions(Cost):  # ls (icp/methods/ls.py)
    epsilon: float = 0.1  # smoothing mass ε (the paper's 0.1)

    def __post_init__(self):
        if not 0.0 <= self.epsilon < 1.0:
            raise ConfigError(f"method.options.epsilon: expected a number in [0, 1), got {self.epsilon!r}")


@dataclass
class ICPOptions(Cost):  # icp and its presets (icp/methods/icp.py)
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


# ICP's presets: method name -> the input optimizer it fixes (the default of its ``optimizer`` option)
ICP_PRESETS = {"icp-sgd": "sgd", "icp-adam": "adam", "icp-ademamix": "ademamix", "ifgsm": "ifgsm"}
ICP_FAMILY = ("icp", *ICP_PRESETS)  # every variant of ICP (ifgsm: the destructive contrast, last)


def _preset_options(method_name: str, input_optimizer: str) -> type:
    return dataclass(type(f"{method_name.title().replace('-', '')}Options", (ICPOptions,),
                          {"__annotations__": {"optimizer": ICPOptions.__annotations__["optimizer"]},
                           "optimizer": input_optimizer}))


@dataclass
class PSKDOptions(Cost):  # pskd (icp/methods/pskd.py)
    alpha_T: float = 0.8  # α_T, the weight of the past predictions at the last epoch (paper: 0.8 on CIFAR-100)

    def __post_init__(self):
        if not 0.0 <= self.alpha_T <= 1.0:
            raise ConfigError(f"method.options.alpha_T: expected a number in [0, 1], got {self.alpha_T!r}")


TEACHER_KEY = "method.options.teacher"


@dataclass
class AIKDOptions(PSKDOptions):  # aikd (icp/methods/aikd.py)
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

    def step_cost(self, epoch: int, epochs: int) -> float:
        """The student's ce step and the frozen teacher's forward of the same batch: 4/3 (the teacher's own training
        is a run of its own, counted there)."""
        return 4 / 3


@dataclass
class CSKDOptions(Cost):  # cskd (icp/methods/cskd.py)
    temperature: float = 4.0  # T (paper and official default 4)
    lam: float = 1.0  # λ, weight of the class-wise KD term (1; the paper uses 3 on fine-grained sets)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError(f"method.options.temperature: expected a number > 0, got {self.temperature!r}")
        if not self.lam >= 0:
            raise ConfigError(f"method.options.lam: expected a number >= 0, got {self.lam!r}")

    cost_basis = "ce's step on the B anchors + a no-grad forward of their B same-class pairs"

    def step_cost(self, epoch: int, epochs: int) -> float:
        """The anchors' ce step and the pairs' forward under ``no_grad`` (a step counts its B anchors): 4/3."""
        return 4 / 3


@dataclass
class TFKDOptions(Cost):  # tfkd (icp/methods/tfkd.py)
    alpha: float = 0.1  # α, weight of the regulariser ((1 − α) on the CE), official reg_alpha for ResNet-18
    temperature: float = 20.0  # T applied to the teacher's probabilities, official reg_temperature for ResNet-18
    multiplier: float = 100.0  # m, official multiplier for ResNet-18
    correct_prob: float = 0.99  # a, the hand-made teacher's probability of the true class

    def __post_init__(self):
        checks = {"alpha": (0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
                  "temperature": (self.temperature > 0, "a number > 0"),
                  "multiplier": (self.multiplier >= 0, "a number >= 0"),
                  "correct_prob": (0.0 < self.correct_prob < 1.0, "a number in (0, 1)")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


@dataclass
class BYOTOptions(Cost):  # byot (icp/methods/byot.py)
    temperature: float = 3.0  # T of the KD from the deepest head to the shallower ones
    alpha: float = 0.1  # α: weight of the KD terms ((1 − α) on the CE terms)
    beta: float = 1e-6  # β: weight of the L2 feature hints

    def __post_init__(self):
        checks = {"temperature": (self.temperature > 0, "a number > 0"),
                  "alpha": (0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
                  "beta": (self.beta >= 0, "a number >= 0")}
        for key, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"method.options.{key}: expected {expected}, got {getattr(self, key)!r}")


def epoch_costs(method: str, options: dict, epochs: int) -> list[float]:
    """Each epoch's step cost of a run of ``method`` (its ``Options`` built from ``options``, defaults filled in),
    in ce steps: :meth:`Cost.step_cost` for e = 0 .. epochs - 1."""
    from icp.config import dataclass_from_options

    given = dict(options or {})
    if method == "aikd" and not given.get("teacher"):  # the teacher names a run; it does not change the cost
        given["teacher"] = "<teacher run>"
    opts = dataclass_from_options(OPTIONS[method], given, "method.options.")
    return [float(opts.step_cost(e, epochs)) for e in range(epochs)]


def training_cost(method: str, options: dict, epochs: int) -> float:
    """A run's training FLOPs in ce epochs of the same data and batch (the sum of :func:`epoch_costs`): the
    compute-matched control trains this many ce epochs; ICP-Adam (K = 5, warm-up 0.25) of 164 epochs costs
    41 + 123·14/3 = 615."""
    return sum(epoch_costs(method, options, epochs))


# The registered methods: name -> Options. The one list of method names (``icp methods``, unknown-name errors).
OPTIONS: dict[str, type] = {
    "ce": NoOptions,
    "ls": LSOptions,
    "icp": ICPOptions,
    **{name: _preset_options(name, optimizer) for name, optimizer in ICP_PRESETS.items()},
    "pskd": PSKDOptions,
    "aikd": AIKDOptions,
    "cskd": CSKDOptions,
    "tfkd": TFKDOptions,
    "byot": BYOTOptions,
    "vae": NoOptions,
}


def layer_weights(kind: str, n: int, lowest: float = math.cos(math.pi / 4)) -> list[float]:
    """ICP's w_l for n feature taps, shallow to deep: ``cosine`` from 1 down to ``lowest`` (authors'
    ``cos_weights``), or 1 (``uniform``). Here, torch-free, so that the schedule figure draws it on the login side."""
    if kind == "uniform" or n == 1:
        return [1.0] * n
    return [math.cos((i / (n - 1)) * math.acos(lowest)) for i in range(n)]
