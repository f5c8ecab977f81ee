"""Training-split scenarios: clean, label-noise and few-shot training sets.

A *scenario* is applied to the **training pool**.  The caller carves any
validation holdout *before* calling :func:`apply_scenario`, from the clean
labels (:func:`stratified_holdout`, or :func:`per_class_holdout` for a
few-shot cell: as many images per class as it trains on), and makes the
validation labels match the setting itself (:mod:`icp.data`: a noisy cell's
validation labels go through :func:`corrupt_labels` with ``stream=
"validation"``, a draw of its own).  Test labels are never corrupted or
subsampled here.  Every function is pure (no I/O, inputs are never modified)
and numpy-only.

Reproducibility
---------------
Every random draw uses its own generator
``np.random.default_rng(np.random.SeedSequence([seed, TAG]))`` where ``TAG`` is
a fixed per-function constant (``zlib.crc32`` of a purpose string).  Python's
``hash()`` (salted per process) and the global numpy RNG are never used, so the
same (labels, scenario, seed) gives the same result in every process and on
every machine with the same numpy version.  Different functions draw from
independent streams even with the same seed, and :func:`corrupt_labels` with a
``stream`` name (the validation labels' noise) draws from a further independent
stream (``SeedSequence([seed, TAG, crc32(stream)])``); without one it draws
exactly what it always did.

Definitions
-----------
``round(x)`` below is Python's built-in ``round`` (ties to even).

* **Symmetric noise** (:func:`corrupt_labels`, ``kind="symmetric"``): exactly
  ``round(rate * N)`` samples (``N = len(labels)``) are chosen uniformly without
  replacement; each gets a class drawn uniformly from the ``num_classes - 1``
  *other* classes (never its own), so every chosen label really is wrong.
* **Asymmetric (class-dependent) noise** (``kind="asymmetric"``): a fixed
  source -> target class map per dataset (:data:`ASYMMETRIC_MAPS`), following
  Patrini et al., "Making Deep Neural Networks Robust to Label Noise: a Loss
  Correction Approach", CVPR 2017.  Only samples whose class has a mapping are
  eligible (``N_eligible`` of them); exactly ``round(rate * N_eligible)`` of
  them are flipped to ``map[class]``.  That total is apportioned across the
  mapped classes by largest remainder in proportion to their sizes, so each
  mapped class loses ~``rate`` of its samples and the noise rate measured over
  the eligible samples equals the requested one up to rounding of one label.

  - ``cifar10``: truck(9)->automobile(1), bird(2)->airplane(0),
    deer(4)->horse(7), cat(3)->dog(5), dog(5)->cat(3); airplane, automobile,
    frog, horse and ship are never flipped.
  - ``fashion-mnist`` (all 10 classes mapped, no class maps to itself)::

        0 T-shirt/top -> 6 Shirt         6 Shirt      -> 0 T-shirt/top
        2 Pullover    -> 4 Coat          4 Coat       -> 2 Pullover
        5 Sandal      -> 7 Sneaker       7 Sneaker    -> 9 Ankle boot
        9 Ankle boot  -> 5 Sandal        1 Trouser    -> 3 Dress
        3 Dress       -> 1 Trouser       8 Bag        -> 0 T-shirt/top

    (upper-body garments swap with their look-alikes, the three footwear
    classes rotate, the two long garments swap; Bag has no close look-alike
    and goes to the boxy T-shirt/top silhouette.)
  - ``cifar100``: each class flips to the *next* fine class (by fine label
    index) within its coarse superclass, cyclically (the standard CIFAR-100
    asymmetric noise); see :data:`CIFAR100_SUPERCLASSES`.  It is a bijection
    of 0..99 with no fixed points.

* **Few-shot** (:func:`few_shot`): exactly ``shots`` samples per class, drawn
  uniformly within each class.
* **Per-class holdout** (:func:`per_class_holdout`): exactly ``per_class``
  samples of every class go to the holdout (a few-shot cell's validation:
  k per class for a k-shot cell), the rest are kept.
* **Stratified holdout** (:func:`stratified_holdout`): per class
  ``round(fraction * n_c)`` samples go to the holdout, the rest are kept.
* **Stratified subset** (:func:`stratified_subset`): exactly ``size`` samples,
  apportioned across classes in proportion to their counts by largest
  remainder.

:func:`apply_scenario` combines these into a :class:`ScenarioResult`
(indices into the training pool, training labels, clean labels, summary).
"""
from __future__ import annotations

import numbers
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ASYMMETRIC_MAPS",
    "CIFAR100_FINE_LABELS",
    "CIFAR100_SUPERCLASSES",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "ScenarioResult",
    "apply_scenario",
    "cifar100_asymmetric_map",
    "corrupt_labels",
    "few_shot",
    "per_class_holdout",
    "stratified_holdout",
    "stratified_subset",
]

# --------------------------------------------------------------------------- #
# Class names and maps
# --------------------------------------------------------------------------- #

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: Standard CIFAR-100 fine label order (index = label).
CIFAR100_FINE_LABELS: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

#: Official CIFAR-100 coarse superclasses (in coarse label order 0..19) ->
#: the 5 fine label indices of each, sorted ascending.
CIFAR100_SUPERCLASSES: dict[str, tuple[int, ...]] = {
    "aquatic_mammals": (4, 30, 55, 72, 95),        # beaver dolphin otter seal whale
    "fish": (1, 32, 67, 73, 91),                   # aquarium_fish flatfish ray shark trout
    "flowers": (54, 62, 70, 82, 92),               # orchid poppy rose sunflower tulip
    "food_containers": (9, 10, 16, 28, 61),        # bottle bowl can cup plate
    "fruit_and_vegetables": (0, 51, 53, 57, 83),   # apple mushroom orange pear sweet_pepper
    "household_electrical_devices": (22, 39, 40, 86, 87),  # clock keyboard lamp telephone television
    "household_furniture": (5, 20, 25, 84, 94),    # bed chair couch table wardrobe
    "insects": (6, 7, 14, 18, 24),                 # bee beetle butterfly caterpillar cockroach
    "large_carnivores": (3, 42, 43, 88, 97),       # bear leopard lion tiger wolf
    "large_man-made_outdoor_things": (12, 17, 37, 68, 76),  # bridge castle house road skyscraper
    "large_natural_outdoor_scenes": (23, 33, 49, 60, 71),   # cloud forest mountain plain sea
    "large_omnivores_and_herbivores": (15, 19, 21, 31, 38),  # camel cattle chimpanzee elephant kangaroo
    "medium_mammals": (34, 63, 64, 66, 75),        # fox porcupine possum raccoon skunk
    "non-insect_invertebrates": (26, 45, 77, 79, 99),  # crab lobster snail spider worm
    "people": (2, 11, 35, 46, 98),                 # baby boy girl man woman
    "reptiles": (27, 29, 44, 78, 93),              # crocodile dinosaur lizard snake turtle
    "small_mammals": (36, 50, 65, 74, 80),         # hamster mouse rabbit shrew squirrel
    "trees": (47, 52, 56, 59, 96),                 # maple oak palm pine willow
    "vehicles_1": (8, 13, 48, 58, 90),             # bicycle bus motorcycle pickup_truck train
    "vehicles_2": (41, 69, 81, 85, 89),            # lawn_mower rocket streetcar tank tractor
}


def cifar100_asymmetric_map() -> dict[int, int]:
    """Each fine class -> the next fine class of its superclass (cyclic, by fine index)."""
    mapping: dict[int, int] = {}
    for group in CIFAR100_SUPERCLASSES.values():
        members = sorted(group)
        for i, c in enumerate(members):
            mapping[c] = members[(i + 1) % len(members)]
    return dict(sorted(mapping.items()))


ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    # Patrini et al. 2017: truck->automobile, bird->airplane, deer->horse, cat<->dog.
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    "fashion-mnist": {
        0: 6,  # T-shirt/top -> Shirt
        6: 0,  # Shirt -> T-shirt/top
        2: 4,  # Pullover -> Coat
        4: 2,  # Coat -> Pullover
        5: 7,  # Sandal -> Sneaker
        7: 9,  # Sneaker -> Ankle boot
        9: 5,  # Ankle boot -> Sandal
        1: 3,  # Trouser -> Dress
        3: 1,  # Dress -> Trouser
        8: 0,  # Bag -> T-shirt/top
    },
    "cifar100": cifar100_asymmetric_map(),
}

_DATASET_ALIASES = {
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10",
    "cifar100": "cifar100", "cifar-100": "cifar100", "cifar_100": "cifar100",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
}

# --------------------------------------------------------------------------- #
# Seeding
# --------------------------------------------------------------------------- #


def _tag(purpose: str) -> int:
    return zlib.crc32(purpose.encode("utf-8"))


_TAG_SYMMETRIC = _tag("icp.scenarios.corrupt_labels.symmetric")
_TAG_ASYMMETRIC = _tag("icp.scenarios.corrupt_labels.asymmetric")
_TAG_FEW_SHOT = _tag("icp.scenarios.few_shot")
_TAG_HOLDOUT = _tag("icp.scenarios.stratified_holdout")
_TAG_SUBSET = _tag("icp.scenarios.stratified_subset")
_TAG_PER_CLASS_HOLDOUT = _tag("icp.scenarios.per_class_holdout")


def _rng(seed: int, tag: int, stream: str = "") -> np.random.Generator:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    entropy = [int(seed), tag] + ([_tag(stream)] if stream else [])
    return np.random.default_rng(np.random.SeedSequence(entropy))


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _as_labels(labels, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {arr.dtype}")
    arr = arr.astype(np.int64, copy=True)
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be non-negative, got min {int(arr.min())}")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(f"label {int(arr.max())} out of range for num_classes={num_classes}")
    return arr


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Split integer ``total`` proportionally to non-negative ``weights``.

    Each part gets ``floor(total * w_i / sum(w))``; the leftover units go to the
    largest fractional remainders, ties broken by lower index.  Exact integer
    arithmetic, so the result is platform independent.  If ``total <= sum(w)``
    and the weights are integers, no part exceeds its weight.
    """
    w = np.asarray(weights, dtype=np.int64)
    if w.ndim != 1 or (w < 0).any():
        raise ValueError("weights must be a 1-D array of non-negative integers")
    s = int(w.sum())
    if total < 0:
        raise ValueError(f"total must be non-negative, got {total}")
    if s == 0:
        if total:
            raise ValueError("cannot apportion a positive total over zero weights")
        return np.zeros_like(w)
    num = np.int64(total) * w  # exact: label counts are far below 2**31
    base, rem = num // s, num % s
    left = total - int(base.sum())
    if left:
        order = np.lexsort((np.arange(len(w)), -rem))  # largest remainder, then lowest index
        base[order[:left]] += 1
    return base


def _class_indices(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Sorted class -> sorted indices of that class."""
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    return rate


def _canonical_dataset(dataset: str | None) -> str:
    if dataset is None:
        raise ValueError("asymmetric noise needs a dataset name (one of: "
                         + ", ".join(sorted(ASYMMETRIC_MAPS)) + ")")
    key = _DATASET_ALIASES.get(str(dataset).strip().lower())
    if key is None:
        raise ValueError(f"no asymmetric noise map for dataset {dataset!r} (known: "
                         + ", ".join(sorted(ASYMMETRIC_MAPS)) + ")")
    return key


# --------------------------------------------------------------------------- #
# Public functions
# --------------------------------------------------------------------------- #


def corrupt_labels(labels: np.ndarray, num_classes: int, kind: str, rate: float, seed: int,
                   dataset: str | None = None, stream: str = "") -> np.ndarray:
    """Return a noisy copy (int64) of ``labels``; see the module docstring.

    ``kind='symmetric'``: exactly ``round(rate*N)`` samples get a uniformly
    random other class.  ``kind='asymmetric'``: exactly
    ``round(rate*N_eligible)`` samples of the classes mapped in
    ``ASYMMETRIC_MAPS[dataset]`` are flipped to ``map[class]``, apportioned
    across mapped classes by largest remainder.  ``rate`` in [0, 1).
    ``stream`` (e.g. ``"validation"``) names an independent draw of the same
    process; empty (the training labels) is the historical draw.
    """
    rate = _check_rate(rate)
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    y = _as_labels(labels, num_classes)
    out = y.copy()
    if kind == "symmetric":
        rng = _rng(seed, _TAG_SYMMETRIC, stream)
        n_noisy = round(rate * len(y))
        if n_noisy == 0:
            return out
        chosen = np.sort(rng.choice(len(y), size=n_noisy, replace=False))
        shift = rng.integers(1, num_classes, size=n_noisy)
        out[chosen] = (y[chosen] + shift) % num_classes
        return out
    if kind == "asymmetric":
        mapping = ASYMMETRIC_MAPS[_canonical_dataset(dataset)]
        bad = [t for t in mapping.values() if t >= num_classes]
        if bad:
            raise ValueError(f"asymmetric map for {dataset!r} targets class {bad[0]} "
                             f">= num_classes={num_classes}")
        rng = _rng(seed, _TAG_ASYMMETRIC, stream)
        classes = [c for c in sorted(mapping) if np.any(y == c)]
        members = [np.flatnonzero(y == c) for c in classes]
        counts = np.array([len(m) for m in members], dtype=np.int64)
        n_eligible = int(counts.sum())
        n_noisy = round(rate * n_eligible)
        if n_noisy == 0:
            return out
        per_class = _largest_remainder(n_noisy, counts)
        for c, idx, k in zip(classes, members, per_class):
            if k:
                flip = rng.choice(idx, size=int(k), replace=False)
                out[flip] = mapping[c]
        return out
    raise ValueError(f"unknown noise kind {kind!r} (expected 'symmetric' or 'asymmetric')")


def few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of exactly ``shots`` samples per class present in ``labels``."""
    if isinstance(shots, bool) or not isinstance(shots, numbers.Integral) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    y = _as_labels(labels)
    rng = _rng(seed, _TAG_FEW_SHOT)
    picked = []
    for c, idx in _class_indices(y).items():
        if len(idx) < shots:
            raise ValueError(f"class {c} has only {len(idx)} samples, fewer than shots={shots}")
        picked.append(rng.choice(idx, size=int(shots), replace=False))
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked)).astype(np.int64)


def per_class_holdout(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep_idx, holdout_idx)``, both sorted int64: exactly ``per_class`` samples of every class present go to
    the holdout (uniformly within the class, its own seeded stream), the rest are kept.  A class needs more than
    ``per_class`` samples so that some are left to keep."""
    if isinstance(per_class, bool) or not isinstance(per_class, numbers.Integral) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    y = _as_labels(labels)
    rng = _rng(seed, _TAG_PER_CLASS_HOLDOUT)
    hold = []
    for c, idx in _class_indices(y).items():
        if len(idx) <= per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples: holding out {per_class} leaves none to keep")
        hold.append(rng.choice(idx, size=int(per_class), replace=False))
    holdout = np.sort(np.concatenate(hold)).astype(np.int64) if hold else np.zeros(0, np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[holdout] = False
    return np.flatnonzero(mask).astype(np.int64), holdout


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep_idx, holdout_idx)``: per class ``round(fraction*n_c)`` samples go to the holdout."""
    fraction = float(fraction)
    if not (0.0 < fraction < 1.0):
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    y = _as_labels(labels)
    rng = _rng(seed, _TAG_HOLDOUT)
    hold = []
    for _, idx in _class_indices(y).items():
        k = round(fraction * len(idx))
        if k:
            hold.append(rng.choice(idx, size=k, replace=False))
    holdout = np.sort(np.concatenate(hold)).astype(np.int64) if hold else np.zeros(0, np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[holdout] = False
    return np.flatnonzero(mask).astype(np.int64), holdout


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of a class-stratified random subset of exactly ``size`` samples."""
    y = _as_labels(labels)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not (0 <= size <= len(y)):
        raise ValueError(f"size must be an integer in [0, {len(y)}], got {size!r}")
    rng = _rng(seed, _TAG_SUBSET)
    groups = _class_indices(y)
    counts = np.array([len(v) for v in groups.values()], dtype=np.int64)
    quota = _largest_remainder(int(size), counts) if len(counts) else counts
    picked = [rng.choice(idx, size=int(k), replace=False)
              for idx, k in zip(groups.values(), quota) if k]
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked)).astype(np.int64)


@dataclass(frozen=True)
class ScenarioResult:
    """Training split produced by :func:`apply_scenario`.

    ``indices`` index the training pool given to :func:`apply_scenario`;
    ``labels`` are the training labels after the scenario (noisy where noise
    was applied) and ``clean_labels`` the original ones, both aligned with
    ``indices``.  ``summary`` is JSON-serialisable.
    """

    indices: np.ndarray
    labels: np.ndarray
    clean_labels: np.ndarray
    summary: dict


def apply_scenario(labels: np.ndarray, num_classes: int, kind: str, seed: int, *, dataset: str | None = None,
                   noise_type: str = "symmetric", noise_rate: float = 0.0,
                   shots: int | None = None) -> ScenarioResult:
    """Apply scenario ``kind`` ('clean' | 'noisy' | 'fewshot') to the training pool ``labels``.

    'noisy' corrupts all pool labels with :func:`corrupt_labels`
    (``noise_type``, ``noise_rate``); 'fewshot' keeps :func:`few_shot`
    (``shots``) samples per class with clean labels; 'clean' keeps everything.
    ``noise_rate`` > 0 is only allowed for 'noisy' and ``shots`` only for
    'fewshot'.  ``summary['class_counts']`` counts the returned (training)
    ``labels`` per class; ``noise_rate_measured`` is ``mean(labels !=
    clean_labels)``; for asymmetric noise ``noise_rate_measured_eligible`` is
    the same over samples whose clean class is mapped.
    """
    num_classes = int(num_classes)
    y = _as_labels(labels, num_classes)
    noise_rate = float(noise_rate)
    if kind not in ("clean", "noisy", "fewshot"):
        raise ValueError(f"unknown scenario kind {kind!r} (expected 'clean', 'noisy' or 'fewshot')")
    if kind != "noisy" and noise_rate != 0.0:
        raise ValueError(f"noise_rate={noise_rate} given for scenario {kind!r}; only 'noisy' applies noise")
    if kind != "fewshot" and shots is not None:
        raise ValueError(f"shots={shots} given for scenario {kind!r}; only 'fewshot' uses shots")

    indices = np.arange(len(y), dtype=np.int64)
    clean = y
    train = y.copy()
    extra: dict = {}
    if kind == "noisy":
        train = corrupt_labels(y, num_classes, noise_type, noise_rate, seed, dataset=dataset)
        if noise_type == "asymmetric":
            mapping = ASYMMETRIC_MAPS[_canonical_dataset(dataset)]
            elig = np.isin(clean, np.array(sorted(mapping), dtype=np.int64))
            n_el = int(elig.sum())
            extra["noise_rate_measured_eligible"] = (
                float(np.mean(train[elig] != clean[elig])) if n_el else 0.0)
            extra["eligible_count"] = n_el
    elif kind == "fewshot":
        if shots is None:
            raise ValueError("scenario 'fewshot' needs shots")
        indices = few_shot(y, shots, seed)
        clean = y[indices]
        train = clean.copy()

    noisy_count = int(np.sum(train != clean))
    summary = {
        "kind": kind,
        "noise_type": noise_type if kind == "noisy" else None,
        "noise_rate": noise_rate if kind == "noisy" else 0.0,
        "noise_rate_measured": float(noisy_count / len(train)) if len(train) else 0.0,
        "noisy_count": noisy_count,
        "shots": int(shots) if shots is not None else None,
        "train_size": int(len(indices)),
        "class_counts": [int(v) for v in np.bincount(train, minlength=num_classes)],
    }
    if kind == "noisy" and dataset is not None:
        summary["dataset"] = str(dataset)
    summary.update(extra)
    return ScenarioResult(indices=indices, labels=train, clean_labels=clean.copy(), summary=summary)
