"""Every method's name and options, without torch: the half of the method registry that grid expansion and config
validation read (the Snakefile imports no torch).

**A method is one file.** A module in ``icp/methods/`` (or one that another installed package names under the
``icp.methods`` entry point group, the way pytest and Snakemake find plugins) defines its ``Options`` dataclass at
the top, then calls :func:`declare` with its name(s) and Options, and only after that imports torch and defines
its ``@register``-ed :class:`~icp.methods.base.Method`::

    @dataclass
    class Options(Cost):
        epsilon: float = 0.1

    declare({"mine": Options})   # the torch-free registry reads this file up to here

    import torch ...

:data:`OPTIONS` (name -> Options) finds every such module without importing torch: it imports each one in
*declaring* mode (:mod:`icp.declaring`), where :func:`declare` records the options and stops the module there; a
full import later (:func:`icp.methods.get`, to train) runs the whole file. Nothing else lists the methods: no
registry to edit, no name to add elsewhere. A module whose options cannot be read, or that declares a method but
registers none, is a one-line ``ConfigError`` naming its file, in every entry point (``icp grid``, the Snakefile,
``icp train``).

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

**Counted costs.** ``python -m icp.flops`` counts each method's step with torch's FLOP counter on each model the
paper grid trains and writes :data:`FLOPS_TABLE` (method, model, counted and declared ratio). Given the run's
model, :func:`epoch_costs` (so :func:`training_cost`, the compute-matched control's epochs, ``icp grid --cost``)
costs a step by the count where the table has the method on that model and the step is the one counted (its
declared cost equals the counted row's declared one: ICP's warm-up epochs and another K keep their declared
cost), and the count differs from the declaration by more than :data:`CONFIRMED`; else by the declaration (a
count within 1 % confirms it: ICP-Adam's 4.68 counted against 14/3 keeps the matched control's epochs). The
table is read here, torch-free.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from icp import declaring
from icp.plugins import plugin_modules
from icp.schema import ConfigError, dataclass_from_options


class Cost:
    """The training cost a method declares (see the module docstring): one ``ce`` step unless overridden.
    ``teacher_method``: the method of the run whose trained model this method starts from (its option ``teacher``,
    AI-KD's pre-trained ce model): the grid trains that run in the same cell, at the same recipe and step budget,
    and its FLOPs count to this method's training cost (:func:`training_cost`).

    ``icp grid --cost`` (:mod:`icp.throughput`) times a step by the bench rows of the method, and reads here what a
    step's time depends on: ``cost_options``, the options that change it (a row stands for a run where they agree;
    others, e.g. ICP's step size, change no step's time); ``pass_count``, the one of them that counts a step's
    passes, and its symbol (ICP's K: a row at another count stands for the run with its extra time over the
    baseline scaled by FLOPs, and a step at count 0 costs its FLOPs); ``family``, a name that methods whose steps run
    alike share (ICP's presets: a packing measured of one stands for the others); :meth:`baseline_epochs`."""

    cost_basis = "forward + backward of the model, as ce"
    teacher_method: Optional[str] = None
    cost_options: tuple[str, ...] = ()
    pass_count: Optional[tuple[str, str]] = None  # (option, symbol)
    family: Optional[str] = None

    def step_cost(self, epoch: int, epochs: int) -> float:
        """FLOPs of one training step at ``epoch`` (0-based) of ``epochs``, in ``ce`` steps of the same batch."""
        return 1.0

    def baseline_epochs(self, epochs: int) -> int:
        """The leading epochs of ``epochs`` whose steps are the baseline's (ICP's warm-up of plain CE), which ``icp
        grid --cost`` times at the baseline's speed: those before the first whose step costs other than one ce step,
        for a method whose pass count is above 0; else none (a step is timed as the method's)."""
        if not self.pass_count or not getattr(self, self.pass_count[0]):
            return 0
        return next((e for e in range(epochs) if self.step_cost(e, epochs) != 1.0), epochs)

    @classmethod
    def canonical(cls, options: dict) -> Optional[tuple[str, dict]]:
        """The (method, options) of the run that a run of this method with ``options`` is in disguise, so that every
        study shares one run of it (ICP with K = 0 is the α-only control ``icp``); None: itself."""
        return None


@dataclass
class NoOptions(Cost):
    """This method takes no options."""


# ICP's presets: method name -> the input optimizer it fixes (the default of its ``optimizer`` option)
ICP_PRESETS = {"icp-sgd": "sgd", "icp-adam": "adam", "icp-ademamix": "ademamix", "ifgsm": "ifgsm"}
ICP_FAMILY = ("icp", *ICP_PRESETS)  # every variant of ICP (ifgsm: the destructive contrast, last)


TEACHER_KEY = "method.options.teacher"


@dataclass
class ProgressiveOptions(Cost):
    """PS-KD's option, shared by the methods built on its progressive targets (pskd, aikd)."""

    alpha_T: float = 0.8  # α_T, the weight of the past predictions at the last epoch (paper: 0.8 on CIFAR-100)

    def __post_init__(self):
        if not 0.0 <= self.alpha_T <= 1.0:
            raise ConfigError(f"method.options.alpha_T: expected a number in [0, 1], got {self.alpha_T!r}")


# ------------------------------------------------------------------------------------------ counted costs
FLOPS_TABLE = Path(__file__).resolve().parents[2] / "results" / "reference" / "flops.csv"  # python -m icp.flops
FLOPS_COLUMNS = ("method", "model", "counted", "declared", "data", "batch", "torch")
CONFIRMED = 0.01  # a count within this fraction of the declaration confirms it: the declared cost stands
_COUNTED: dict = {}  # table path -> {(method name, model): [(declared, counted, spec), ...]}


def counted_table(path: Optional[Path] = None) -> dict:
    """The committed FLOP counts (:data:`FLOPS_TABLE`, or ``path``): {(method name, model): [(declared, counted,
    method spec), ...]} ({} without a table)."""
    path = path or FLOPS_TABLE
    key = str(path)
    if key not in _COUNTED:
        import csv

        out: dict = {}
        try:
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    out.setdefault((r["method"].partition(":")[0], r["model"]), []).append(
                        (float(r["declared"]), float(r["counted"]), r["method"]))
        except OSError:
            pass
        _COUNTED[key] = out
    return _COUNTED[key]


def counted_cost(method: str, model: Optional[str], declared: float, path: Optional[Path] = None) -> tuple[float, str]:
    """A step's cost in ce steps and its basis: the count of ``method`` on ``model`` where :data:`FLOPS_TABLE`
    counts the step (a row of the method on the model whose declared cost is ``declared``, to 1e-3: the options and
    epoch it counted cost the same) and differs from the declaration by more than :data:`CONFIRMED`; else
    ``declared``. Bases: ``counted``, ``declared (count within 1 %)``, ``declared``."""
    for decl, count, spec in counted_table(path).get((method, model), []) if model else []:
        if abs(decl - declared) <= 1e-3:
            if abs(count - declared) > CONFIRMED * declared:
                return count, f"counted ({spec} on {model})"
            return declared, f"declared (count {count:.3f} within {CONFIRMED:.0%})"
    return declared, "declared"


def epoch_costs(method: str, options: dict, epochs: int, model: Optional[str] = None) -> list[float]:
    """Each epoch's step cost of a run of ``method`` (its ``Options`` built from ``options``, defaults filled in),
    in ce steps: :meth:`Cost.step_cost` for e = 0 .. epochs - 1; given the run's ``model``, counted where
    :data:`FLOPS_TABLE` counts it (:func:`counted_cost`)."""
    opts = declared_options(method, options)
    declared = [float(opts.step_cost(e, epochs)) for e in range(epochs)]
    if not model:
        return declared
    cache: dict = {}
    return [cache.setdefault(d, counted_cost(method, model, d)[0]) for d in declared]


def declared_options(method: str, options: dict) -> Cost:
    """The ``Options`` of ``method`` built from ``options`` (defaults filled in; a placeholder for a teacher run not
    named): what it declares of its cost."""
    given = dict(options or {})
    if teacher_of(method) and not given.get("teacher"):  # the teacher names a run; it does not change the cost
        given["teacher"] = "<teacher run>"
    return dataclass_from_options(OPTIONS[method], given, "method.options.")


def teacher_of(method: str) -> Optional[str]:
    """The method of the run whose trained model ``method`` starts from (:attr:`Cost.teacher_method`), or None."""
    return getattr(OPTIONS.get(method), "teacher_method", None)


def teacher_cost(method: str, epochs: int, model: Optional[str] = None) -> float:
    """The training FLOPs of the teacher run ``method`` needs, in ce epochs (0 without one): the teacher trains the
    cell's recipe for as many epochs as the run it serves (:func:`icp.grid.expand`)."""
    teacher = teacher_of(method)
    return training_cost(teacher, {}, epochs, model) if teacher else 0.0


def training_cost(method: str, options: dict, epochs: int, model: Optional[str] = None) -> float:
    """A run's training FLOPs in ce epochs of the same data and batch (the sum of :func:`epoch_costs`; counted on
    ``model`` where :data:`FLOPS_TABLE` says so), its teacher run's included (:func:`teacher_cost`: what it takes
    to produce the model, the figure an equal-compute comparison needs): the compute-matched control trains this
    many ce epochs. ICP-Adam (K = 5, warm-up 0.25) of 164 epochs costs 41 + 123·14/3 = 615; AI-KD of 3 epochs
    3·4/3 + the teacher's 3 = 7."""
    return sum(epoch_costs(method, options, epochs, model)) + teacher_cost(method, epochs, model)


def step_flops(method: str, options: dict, epochs: int, model: Optional[str] = None) -> tuple[float, str]:
    """The cost of a run's last-epoch step (past any warm-up) in ce steps, and its basis (:func:`counted_cost`)."""
    declared = epoch_costs(method, options, epochs)[-1]
    return counted_cost(method, model, declared)


# ------------------------------------------------------------------------------------------ the catalogue
ENTRY_POINTS = "icp.methods"  # the entry point group of methods in other installed packages
NOT_METHODS = ("base", "options")  # modules of this package that hold no method
_FOUND: dict[str, type] = {}  # method name -> Options, as declared
SOURCES: dict[str, str] = {}  # method name -> the module that declares it
_SCANNED: list[bool] = []


def declare(options: dict[str, type]) -> None:
    """Declare the methods a module defines: name -> ``Options`` dataclass. Call it after the Options and before
    any torch import: in declaring mode (:data:`OPTIONS` reading the module) it stops the module here."""
    namespace = sys._getframe(1).f_globals
    module = namespace["__name__"]
    for name, cls in options.items():
        if SOURCES.get(name, module) != module:
            raise ConfigError(f"method '{name}' is declared twice: in {SOURCES[name]} and in {module}")
        _resolve_annotations(cls, module, namespace)
        _FOUND[name], SOURCES[name] = cls, module
    declaring.stop_here(module)


def _resolve_annotations(cls: type, module: str, namespace: dict) -> None:
    """Evaluate the string annotations (``from __future__ import annotations``) of the module's own Options
    classes now, in its namespace: a module read in declaring mode leaves ``sys.modules``, where
    ``typing.get_type_hints`` (the config's validation) would look for ``Literal`` and the like."""
    for klass in cls.__mro__:
        own = klass.__dict__.get("__annotations__")
        if klass.__module__ == module and own:
            klass.__annotations__ = {k: eval(v, namespace) if isinstance(v, str) else v for k, v in own.items()}


def _read(module: str) -> None:
    """Read a method module's declaration without running the rest of it (unless it is imported already), and
    refuse one that declares a method but registers none."""
    if module in sys.modules:  # imported in full: its declare() ran
        return
    before = set(_FOUND)
    declaring.read(module, "method options")
    names = [n for n, m in SOURCES.items() if m == module]
    spec = importlib.util.find_spec(module)
    if names and set(names) - before and spec and spec.origin and not _registers(Path(spec.origin)):
        raise ConfigError(f"{spec.origin}: declares method {', '.join(map(repr, names))} but registers no Method "
                          "class (@register) for it")


def _registers(path: Path) -> bool:
    """Whether a module's source uses ``register`` (a ``@register`` class, or a ``register(...)`` call)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return True  # reported where it is imported
    return any(isinstance(n, ast.Name) and n.id == "register" or isinstance(n, ast.Attribute) and n.attr == "register"
               for n in ast.walk(tree))


def _scan() -> dict[str, type]:
    """Every method: this package's modules, then the modules of the ``icp.methods`` entry points."""
    if not _SCANNED:
        for module in plugin_modules("icp.methods", ENTRY_POINTS, NOT_METHODS):
            _read(module)
        _SCANNED.append(True)
    return _FOUND


class _Catalogue(Mapping):
    """name -> Options of every method, discovered on first use (:func:`_scan`)."""

    def __getitem__(self, name: str) -> type:
        return _scan()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(_scan()))

    def __len__(self) -> int:
        return len(_scan())


# The registered methods: name -> Options. The one list of method names (``icp methods``, unknown-name errors).
OPTIONS: Mapping[str, type] = _Catalogue()


def layer_weights(kind: str, n: int, lowest: float = math.cos(math.pi / 4)) -> list[float]:
    """ICP's w_l for n feature taps, shallow to deep: ``cosine`` from 1 down to ``lowest`` (authors'
    ``cos_weights``), or 1 (``uniform``). Here, torch-free, so that the schedule figure draws it on the login side."""
    if kind == "uniform" or n == 1:
        return [1.0] * n
    return [math.cos((i / (n - 1)) * math.acos(lowest)) for i in range(n)]
