"""The one config schema: every key a training run accepts, its type, range and default.

A run is configured by a YAML file plus ``--set key=value`` overrides (dotted keys, YAML-parsed values),
merged over the defaults below and validated before anything is written:

* an unknown key is an error naming the key and the nearest valid one;
* a wrong type, choice or range names the key and the expected value.

Method options (``method.options``) are validated against the ``Options`` dataclass of the chosen method,
and model options (``model.options``) against the model constructor, so each method/model documents its own
options in its own file while this module stays the single entry point.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


@dataclass
class DataConfig:
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "imagefolder", "cub"] = "fashion-mnist"
    root: str = "data"
    download: bool = False  # allow torchvision to download a missing dataset
    image_size: Optional[int] = None  # imagefolder only: images are resized to this square size (default 64)
    augment: Literal["standard", "randaugment", "none"] = "standard"
    loader: Literal["auto", "torch", "resident"] = "auto"  # auto: resident unless augment needs per-image PIL ops
    num_workers: int = 0
    val_fraction: float = 0.0  # stratified, seeded hold-out from the training split (0 = none)
    train_subset: Optional[int] = None  # stratified subset of the training pool, for quick runs
    test_subset: Optional[int] = None  # stratified subset of the test split, for quick runs
    # seed of train_subset, the validation hold-out and test_subset, so that every seed and method of a cell
    # trains on the same pool and is selected and tested on the same images; null: the scenario's seed
    split_seed: Optional[int] = None
    drop_last: bool = False


@dataclass
class ScenarioConfig:
    kind: Literal["clean", "noisy", "fewshot"] = "clean"
    noise_type: Literal["symmetric", "asymmetric"] = "symmetric"
    noise_rate: float = 0.0
    shots: Optional[int] = None
    seed: Optional[int] = None  # seed of the data split (subset, val hold-out, noise, few-shot); null = train.seed


@dataclass
class ModelConfig:
    name: str = "resnet20"
    options: dict = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "ce"
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # adamw only


@dataclass
class ScheduleConfig:
    name: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # multistep: epochs, or fractions of epochs if < 1
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0, per iteration
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_clip: Optional[float] = None  # max global grad norm
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    channels_last: bool = False  # CUDA only
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    # on the validation split, for best.pt; a generative model uses elbo when this names a classification metric
    best_metric: Literal["top1", "macro_f1", "nll", "ece", "elbo", "ssim", "fid_recon"] = "top1"
    progress: Optional[bool] = None  # progress bars; null: only when writing to a terminal
    # generative models: FID's feature network. "inception" (torch-fidelity's Inception-v3 from torch hub's cache,
    # downloaded if absent) or "inception:PATH" (a weights file), as published FIDs; or a classifier run directory
    # of this dataset (its best.pt, else last.pt; the penultimate layer): FIDs of this project only; null: no FID
    fid_features: Optional[str] = None
    # FIDs every this many epochs and at the last (the others record null): Inception features cost about 0.3 s
    # an image on one CPU thread, three passes per test image
    fid_every: int = 1
    # test (and validation) metrics every this many epochs and at the last; the others record null. For runs of
    # thousands of short epochs (few-shot at a fixed step budget); null: every epoch
    eval_every: Optional[int] = None
    # live views of the run besides its log, written inside the run directory (icp.trackers; docs/trackers.md):
    # any of LOGGERS. record.json stays the result; a tracker that fails warns once and training goes on
    loggers: list = field(default_factory=list)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Stable hash of the resolved config (identifies a run's settings)."""
        return _digest(self.to_dict())


# The run trackers that train.loggers accepts (icp.trackers): W&B in offline mode only.
LOGGERS = ("tensorboard", "mlflow", "wandb")
# Keys that change how a run is shown or where it runs, not what it computes: a run may be resumed with other values.
RESULT_NEUTRAL_KEYS = frozenset({"progress", "fid_every", "loggers"})
# Keys added after runs existed: left out of the digest while null, so those runs keep their digests.
OMIT_WHEN_NULL = frozenset({"fid_features", "eval_every", "split_seed"})
# Keys in which the seeds of one cell of a table differ (AI-KD's teacher is the ce run of the same seed), or that only
# say where the data lives or how it is loaded: left out of cell_digest.
CELL_NEUTRAL_KEYS = ("train.seed", "scenario.seed", "method.options.teacher", "data.root", "data.download",
                     "data.num_workers")


def _digest(payload: dict) -> str:
    """12 hex digits of the hash of a resolved config dict, without its result-neutral train keys."""
    train = {k: v for k, v in payload.get("train", {}).items()
             if k not in RESULT_NEUTRAL_KEYS and not (k in OMIT_WHEN_NULL and v is None)}
    data = {k: v for k, v in payload.get("data", {}).items() if not (k in OMIT_WHEN_NULL and v is None)}
    blob = json.dumps({**payload, "train": train, **({"data": data} if "data" in payload else {})},
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cell_digest(config: dict, without: typing.Iterable[str] = ()) -> str:
    """The digest that the runs of one table cell share: of a resolved config dict (a record's ``config``) without
    :data:`CELL_NEUTRAL_KEYS` and the dotted keys (or whole sections) in ``without``. Two runs with the same
    cell digest differ by seed alone, so their results may be averaged."""
    payload = json.loads(json.dumps(config, default=str))  # a deep copy to prune
    for key in (*CELL_NEUTRAL_KEYS, *without):
        *parents, last = key.split(".")
        node = payload
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return _digest(payload)

# Range checks: key -> (predicate, description of the expected value).
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.num_workers": (lambda v: v >= 0, "an integer >= 0"),
    "data.val_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "data.train_subset": (lambda v: v is None or v > 0, "a positive integer or null"),
    "data.test_subset": (lambda v: v is None or v > 0, "a positive integer or null"),
    "data.split_seed": (lambda v: v is None or v >= 0, "an integer >= 0 or null"),
    "data.image_size": (lambda v: v is None or v >= 8, "an integer >= 8 or null"),
    "scenario.noise_rate": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "scenario.shots": (lambda v: v is None or v > 0, "a positive integer or null"),
    "scenario.seed": (lambda v: v is None or v >= 0, "an integer >= 0 or null"),
    "optim.lr": (lambda v: v > 0, "a number > 0"),
    "optim.momentum": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optim.betas": (lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v),
                    "two numbers in [0, 1)"),
    "schedule.milestones": (lambda v: all(isinstance(m, (int, float)) and m > 0 for m in v),
                            "a list of positive numbers"),
    "schedule.gamma": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "schedule.warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "schedule.min_lr": (lambda v: v >= 0, "a number >= 0"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.seed": (lambda v: v >= 0, "an integer >= 0"),
    "train.grad_clip": (lambda v: v is None or v > 0, "a number > 0 or null"),
    "train.fid_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.eval_every": (lambda v: v is None or v >= 1, "an integer >= 1 or null"),
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            if arg is not type(None):
                try:
                    return _coerce(value, arg, key)
                except ConfigError:
                    pass
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (bool, str, dict, list):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - schema author error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    hint = ""
    if origin is Literal and isinstance(value, str):  # a typo of one of the choices: the nearest of them
        close = nearest(value, [str(a) for a in typing.get_args(tp)])
        hint = f"; did you mean '{close}'?" if close else ""
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{hint}")


def nearest(word: str, valid: typing.Iterable[str]) -> Optional[str]:
    """The valid word nearest to ``word``, never ``word`` itself, or None where none is near. Nearest by the
    longest run of characters they share (as a share of ``word``: ``resnet18x`` is nearer ``preact_resnet18`` than
    ``resnet56``), then by difflib's ratio; near enough when they share a run of over half of ``word``, or have a
    ratio of at least 0.5. Case is ignored."""
    best, best_key = None, None
    w = str(word).lower()
    for candidate in valid:
        c = str(candidate).lower()
        if c == w:
            continue
        m = difflib.SequenceMatcher(None, w, c)
        run = max((b.size for b in m.get_matching_blocks()), default=0) / max(1, len(w))
        key = (run, m.ratio())
        if (run > 0.5 or key[1] >= 0.5) and (best_key is None or key > best_key):
            best, best_key = candidate, key
    return best


def did_you_mean(word: str, valid: typing.Iterable[str]) -> str:
    """'; did you mean 'x'?' for the nearest valid word (:func:`nearest`), else the list of valid words."""
    valid = sorted(valid)
    if not valid:
        return "; nothing is accepted here"
    close = nearest(word, valid)
    return f"; did you mean '{close}'?" if close else f"; valid: {', '.join(valid)}"


def existing_dir(path: str | Path, what: str) -> Path:
    """``path`` if it is a directory, else a one-line error naming it (and the nearest sibling that exists)."""
    path = Path(path)
    if path.is_dir():
        return path
    parent = next((p for p in path.parents if p.is_dir()), Path("."))
    rest = path.relative_to(parent).parts[0]
    siblings = [c.name for c in parent.iterdir() if c.is_dir()] if parent.is_dir() else []
    close = difflib.get_close_matches(rest, siblings, n=1, cutoff=0.6)
    hint = f"; did you mean {parent / close[0]}?" if close else ""
    raise ConfigError(f"{path}: no such {what}{hint}")


def unknown_key_error(key: str, valid: typing.Iterable[str]) -> ConfigError:
    return ConfigError(f"unknown key '{key}'{did_you_mean(key.rsplit('.', 1)[-1], valid)}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise unknown_key_error(f"{prefix}{key}", fields)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], f"{prefix}{name}.")
        else:
            key = f"{prefix}{name}"
            value = _coerce(data[name], tp, key)
            check = _RANGES.get(key)
            if check is not None and not check[0](value):
                raise ConfigError(f"{key}: expected {check[1]}, got {value!r}")
            kwargs[name] = value
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a section")
        node = nxt
    node[path[-1]] = value


def resolve(data: dict | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Merge overrides into ``data``, validate everything (method/model options included), return a Config."""
    tree = json.loads(json.dumps(data or {}))  # deep copy, plain types
    for item in overrides:
        path, value = parse_override(item)
        _set_dotted(tree, path, value)
    cfg = _build(Config, tree, "")
    _validate_cross(cfg)
    return cfg


def yaml_error_line(path: str | Path, exc: Exception) -> str:
    """``FILE:LINE:COLUMN: not valid YAML (what is wrong)``, 1-based as editors count, from PyYAML's marks."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or \
        str(exc).splitlines()[0]
    return f"{where}: not valid YAML ({what})"


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file's mapping; a missing file or invalid YAML is a one-line ConfigError naming ``what``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(p, exc)) from None


def load(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config file (or none: defaults) and resolve it with overrides."""
    return resolve(read_yaml(path) if path is not None else {}, overrides)


def _validate_cross(cfg: Config) -> None:
    """Checks spanning several keys, plus the method's and model's own options."""
    from icp import model_registry as models  # the registry without torch: grid expansion validates with it
    from icp.methods import validate_options

    for i, name in enumerate(cfg.train.loggers):
        if name not in LOGGERS:
            close = nearest(name, LOGGERS) if isinstance(name, str) else None
            raise ConfigError(f"train.loggers: unknown logger {name!r}{f'; did you mean {close!r}?' if close else ''} "
                              f"(accepted: {', '.join(LOGGERS)})")
        if name in cfg.train.loggers[:i]:
            raise ConfigError(f"train.loggers: {name!r} is listed twice")
    sc = cfg.scenario
    if sc.kind == "fewshot" and sc.shots is None:
        raise ConfigError("scenario.shots: expected a positive integer when scenario.kind is 'fewshot'")
    if sc.kind == "noisy" and sc.noise_rate <= 0:
        raise ConfigError("scenario.noise_rate: expected a number in (0, 1) when scenario.kind is 'noisy'")
    if sc.kind == "noisy" and sc.noise_type == "asymmetric" and cfg.data.dataset in ("imagefolder", "cub"):
        raise ConfigError(f"scenario.noise_type: 'asymmetric' has no class map for '{cfg.data.dataset}'; use "
                          "'symmetric'")
    if cfg.data.augment == "randaugment" and cfg.data.loader == "resident":
        raise ConfigError("data.loader: 'resident' cannot apply data.augment 'randaugment'; use 'torch' or 'auto'")
    if cfg.model.name not in models.MODELS:
        raise ConfigError(f"model.name: unknown model '{cfg.model.name}'{did_you_mean(cfg.model.name, models.MODELS)}")
    options = dict(cfg.model.options)
    if "image_size" in inspect.signature(models.MODELS[cfg.model.name]).parameters:  # the VAE: sized to the data
        from icp.data import input_size

        size = input_size(cfg.data.dataset, cfg.data.image_size)
        if options.setdefault("image_size", size) != size:
            raise ConfigError(f"model.options.image_size: {options['image_size']} != the {size}x{size} images of "
                              f"data.dataset {cfg.data.dataset!r} (leave it unset to follow the data)")
    try:
        cfg.model.options = models.check_options(cfg.model.name, options)  # names and values (the model's checks)
    except ValueError as exc:
        raise ConfigError(f"model.options: {exc}") from None
    cfg.method.options = validate_options(cfg.method.name, cfg.method.options)


def dataclass_from_options(cls: type, options: dict, prefix: str) -> Any:
    """Validate a method's option mapping against its ``Options`` dataclass (shared by every method)."""
    return _build(cls, options, prefix)
