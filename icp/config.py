"""The one config schema: every key a training run accepts, its type, range and default.

A run is configured by a YAML file plus ``--set key=value`` overrides (dotted keys, YAML-parsed values),
merged over the defaults below and validated before anything is written:

* an unknown key is an error naming the key and the nearest valid one;
* a wrong type, choice or range names the key and the expected value.

Method options (``method.options``) are validated against the ``Options`` dataclass of the chosen method,
and model options (``model.options``) against the model constructor, so each method/model documents its own
options in its own file while this module stays the single entry point. How a mapping is read into these
dataclasses (unknown keys, types, ranges, ``--set`` overrides, YAML files) is :mod:`icp.schema`'s, which every module
may import; this module states the training run's fields and the checks that span several of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from icp.schema import ConfigError, Range, build_dataclass, did_you_mean, nearest, parse_override, read_yaml, set_dotted


@dataclass
class DataConfig:
    # the dataset (docs/data.md: where each is found and how to prepare it)
    dataset: Literal["fashion-mnist", "cifar10", "cifar100", "imagefolder", "cub"] = "fashion-mnist"
    root: str = "data"  # the folder that holds the datasets (icp data prepare --root)
    download: bool = False  # allow torchvision to download a missing dataset
    image_size: Optional[int] = None  # imagefolder only: images are resized to this square size (default 64)
    # training augmentation: standard is random crop and flip
    augment: Literal["standard", "randaugment", "none"] = "standard"
    loader: Literal["auto", "torch", "resident"] = "auto"  # auto: resident unless augment needs per-image PIL ops
    num_workers: int = 0  # DataLoader worker processes (the torch loader only)
    # validation hold-out from the training split (0 = none), matching the scenario (icp.data): clean and noisy
    # cells a stratified fraction (a noisy cell's labels noised alike), a k-shot cell k images per class
    val_fraction: float = 0.0
    train_subset: Optional[int] = None  # stratified subset of the training pool, for quick runs
    test_subset: Optional[int] = None  # stratified subset of the test split, for quick runs
    # seed of train_subset, the validation hold-out and test_subset, so that every seed and method of a cell
    # trains on the same pool and is selected and tested on the same images; null: the scenario's seed
    split_seed: Optional[int] = None
    drop_last: bool = False  # drop the last incomplete training batch of an epoch
    # filled in by resolution, not set by hand: "setting" where validation is on and the scenario shapes it (a noisy
    # cell's labels noised alike, a k-shot cell k images per class: icp.data), null otherwise. It is in the digest,
    # so a noisy or few-shot record validated the older way (clean labels, the whole pool) is no run of this config
    val_protocol: Optional[str] = None


@dataclass
class ScenarioConfig:
    # the setting: clean labels, noisy labels, or k images per class
    kind: Literal["clean", "noisy", "fewshot"] = "clean"
    # noisy: flips to any other class, or to a fixed similar class
    noise_type: Literal["symmetric", "asymmetric"] = "symmetric"
    noise_rate: float = 0.0  # noisy: the share of training labels flipped
    shots: Optional[int] = None  # fewshot: training images per class
    seed: Optional[int] = None  # seed of the data split (subset, val hold-out, noise, few-shot); null = train.seed


@dataclass
class ModelConfig:
    name: str = "resnet20"  # the network (icp models lists them)
    options: dict = field(default_factory=dict)  # the model's own options (e.g. shortcut: A for the CIFAR ResNets)


@dataclass
class MethodConfig:
    name: str = "ce"  # the training method (icp methods lists them)
    options: dict = field(default_factory=dict)  # the method's Options dataclass (icp/methods/NAME.py; docs/methods.md)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"  # the optimizer
    lr: float = 0.1  # the peak learning rate
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 5e-4  # L2 penalty (sgd) or decoupled decay (adamw)
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # adamw only


@dataclass
class ScheduleConfig:
    name: Literal["multistep", "cosine", "constant"] = "multistep"  # the learning-rate schedule, per iteration
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # multistep: epochs, or fractions of epochs if < 1
    gamma: float = 0.1  # multistep: the factor at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from 0, per iteration
    min_lr: float = 0.0  # cosine floor


@dataclass
class TrainConfig:
    epochs: int = 200  # passes over the training split
    batch_size: int = 128  # training images per step
    eval_batch_size: int = 1000  # images per evaluation batch (no effect on results)
    # the seed of initialisation, order and augmentation (and of the data split where scenario.seed is null)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    grad_clip: Optional[float] = None  # max global grad norm
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU)
    channels_last: bool = False  # CUDA only
    # torch.compile mode (CUDA); none: eager
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    # on the validation split, for best.pt; a generative model uses elbo when this names a classification metric
    best_metric: Literal["top1", "macro_f1", "nll", "ece", "elbo", "ssim", "fid_recon"] = "top1"
    progress: Optional[bool] = None  # progress bars; null: only when writing to a terminal
    # generative models: FID's feature network. "inception" (torch-fidelity's Inception-v3 from torch hub's cache,
    # downloaded if absent) or "inception:PATH" (a weights file), as published FIDs; or a classifier run directory
    # of this dataset (its best.pt, else last.pt; the penultimate layer): FIDs of this project only; null: no FID
    fid_features: Optional[str] = None
    # FIDs every this many epochs and at the last (the others record null): Inception features are slow on a CPU
    fid_every: int = 1
    # test (and validation) metrics every this many epochs and at the last; the others record null. For runs of
    # thousands of short epochs (few-shot at a fixed step budget); null: every epoch
    eval_every: Optional[int] = None
    # live views of the run besides its log, written inside the run directory (icp.trackers; docs/trackers.md):
    # any of LOGGERS (tensorboard, mlflow, wandb). record.json stays the result; a tracker that fails warns once and
    # training goes on
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
OMIT_WHEN_NULL = frozenset({"fid_features", "eval_every", "split_seed", "val_protocol"})
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
RANGES: dict[str, Range] = {
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


def resolve(data: dict | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Merge overrides into ``data``, validate everything (method/model options included), return a Config."""
    tree = json.loads(json.dumps(data or {}))  # deep copy, plain types
    for item in overrides:
        path, value = parse_override(item)
        set_dotted(tree, path, value)
    cfg = build_dataclass(Config, tree, "", RANGES)
    _validate_cross(cfg)
    _fill_val_protocol(cfg)
    return cfg


def _fill_val_protocol(cfg: Config) -> None:
    """Set ``data.val_protocol`` from the scenario (see :class:`DataConfig`); a value given that differs from it is a
    one-line error (a resolved config read back gives the same value)."""
    protocol = "setting" if cfg.data.val_fraction > 0 and cfg.scenario.kind in ("noisy", "fewshot") else None
    if cfg.data.val_protocol not in (None, protocol):
        raise ConfigError(f"data.val_protocol: set from the scenario ({protocol or 'null'} for a {cfg.scenario.kind} "
                          f"cell{'' if cfg.data.val_fraction > 0 else ' without validation'}), got "
                          f"{cfg.data.val_protocol!r}")
    cfg.data.val_protocol = protocol


def load(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config file (or none: defaults) and resolve it with overrides."""
    return resolve(read_yaml(path) if path is not None else {}, overrides)


def _validate_cross(cfg: Config) -> None:
    """Checks spanning several keys, plus the method's and model's own options."""
    from icp.methods import validate_options
    from icp.models import MODELS, check_options  # without torch: grid expansion validates with it

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
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model.name: unknown model '{cfg.model.name}'{did_you_mean(cfg.model.name, MODELS)}")
    options = dict(cfg.model.options)
    if "image_size" in inspect.signature(MODELS[cfg.model.name]).parameters:  # the VAE: sized to the data
        from icp.data import input_size

        size = input_size(cfg.data.dataset, cfg.data.image_size)
        if options.setdefault("image_size", size) != size:
            raise ConfigError(f"model.options.image_size: {options['image_size']} != the {size}x{size} images of "
                              f"data.dataset {cfg.data.dataset!r} (leave it unset to follow the data)")
    try:
        cfg.model.options = check_options(cfg.model.name, options)  # names and values (the model's checks)
    except ValueError as exc:
        raise ConfigError(f"model.options: {exc}") from None
    cfg.method.options = validate_options(cfg.method.name, cfg.method.options)

