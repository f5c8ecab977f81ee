"""Datasets: where the images come from, their statistics, and how the train/val/test splits are built.

Every dataset is read once into memory as ``uint8`` arrays (N, H, W, C) plus ``int64`` labels, so both loaders
(:mod:`icp.loaders`) share one representation and a split is just an index array.

* ``fashion-mnist`` (default): the four original IDX files, looked up in ``<root>/FashionMNIST/raw`` (the
  torchvision layout, ``.gz`` or not) and then in Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``); with ``data.download: true`` torchvision downloads them.
* ``cifar10`` / ``cifar100``: torchvision's python-pickle archives under ``<root>``; downloaded only with
  ``data.download: true`` (or ``icp data prepare``).
* ``cub``: CUB-200-2011 (the ICP paper's VAE data), prepared by ``icp data prepare --dataset cub`` from the
  official archive into ``<root>/CUB_200_2011/split/{train,test}/<class>/`` and read as an image folder.
* ``imagefolder``: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (Tiny-ImageNet/CUB style), resized to
  ``data.image_size`` (default 64) squares; mean/std are measured on the training images.

Split order: optional stratified ``train_subset`` of the training pool → optional validation hold-out, one that
matches the setting (``data.val_fraction`` > 0 turns it on) → the scenario (label noise or few-shot,
:mod:`icp.scenarios`) on what remains:

* **clean**: a stratified ``val_fraction`` of the pool (per class ``round(fraction × n_c)``), clean labels.
* **noisy**: the same images as the clean cell's hold-out, their labels noised by the training labels' process (the
  same ``noise_type`` and ``noise_rate``, so the same transition) in a draw of its own
  (:func:`icp.scenarios.corrupt_labels` with ``stream="validation"``): a noisy-label method has no clean labels,
  and neither has its validation. ``Splits.val.labels`` are the noisy ones, on which every choice is made (best
  epoch, tuning); ``Splits.val_clean_labels`` keeps the clean ones only as an oracle metric (``val_clean`` in the
  record), never a choice.
* **fewshot** (k shots): as many images per class as the cell trains on (k per class,
  :func:`icp.scenarios.per_class_holdout`; ``val_fraction`` only turns it on), clean labels, then the k training
  shots per class are drawn from the rest: the two are disjoint, and a few-shot setting never validates on
  thousands of images.

The test split is never touched except by ``test_subset``. The subsets, the hold-out and the validation labels'
noise are seeded by ``data.split_seed`` (the recipes set 0: every method and seed of a cell trains on the same pool,
is selected on the same validation images and labels and tested on the same test images), or where it is null by
the scenario's seed (``scenario.seed``, default ``train.seed``: then the same for every method of a seed), which
always seeds the training labels' noise and the few-shot draw of the training shots.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from icp import atomic, scenarios

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(RuntimeError):
    """A missing or malformed dataset, reported to the user as one line."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


INFO = {
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, (0.2860,), (0.3530,), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo("cifar10", 10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo("cifar100", 100, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass
class ImageArrays:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    source: str = ""  # the folder the files were read from (the run record says it: data.root may fall back)

    def take(self, idx: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[idx], self.labels[idx], self.source)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    info: DatasetInfo
    train: ImageArrays  # labels as trained on (noisy under a noise scenario)
    train_clean_labels: np.ndarray
    test: ImageArrays
    val: Optional[ImageArrays] = None  # labels as every choice sees them (noisy under a noise scenario)
    summary: dict = field(default_factory=dict)  # scenario + split sizes, for the run record
    # a noise scenario's clean validation labels (aligned with val): an oracle metric only, never a choice; else None
    val_clean_labels: Optional[np.ndarray] = None


# ----------------------------------------------------------------------------------------------- reading
def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or not."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(dims)


def _find_fashion_mnist(root: Path) -> Optional[Path]:
    for folder in (root / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST):
        if all(any((folder / (f + ext)).is_file() for ext in ("", ".gz"))
               for names in FASHION_MNIST_FILES.values() for f in names):
            return folder
    return None


def _idx_path(folder: Path, stem: str) -> Path:
    plain = folder / stem
    return plain if plain.is_file() else folder / (stem + ".gz")


def _load_fashion_mnist(root: Path, train: bool, download: bool) -> ImageArrays:
    folder = _find_fashion_mnist(root)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=train, download=True)
        folder = _find_fashion_mnist(root)
    if folder is None:
        raise DataError(
            f"Fashion-MNIST not found in {root / 'FashionMNIST' / 'raw'} or {DEBIAN_FASHION_MNIST}: "
            f"run `apt-get install dataset-fashion-mnist` or `icp data prepare --dataset fashion-mnist "
            f"--root {root} --download`")
    img_name, lbl_name = FASHION_MNIST_FILES[train]
    images = _read_idx(_idx_path(folder, img_name))[..., None]  # (N, 28, 28, 1)
    labels = _read_idx(_idx_path(folder, lbl_name)).astype(np.int64)
    return ImageArrays(np.ascontiguousarray(images), labels, str(folder))


# torchvision's layout of the CIFAR archives under the root: folder and the files it reads
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch")),
    "cifar100": ("cifar-100-python", ("train", "test")),
}


def _prepare_line(name: str, root: Path, how: str = "on a machine with internet") -> str:
    return f"run `icp data prepare --dataset {name} --root {root} --download` {how}"


def missing(name: str, root: str | Path) -> Optional[str]:
    """Where a dataset is not where its loader will look: one line naming what is missing and the command that
    prepares it, or None when it is there. Reads only the file system (no torch, no decoding), so the login side
    checks a whole grid before submitting it (:mod:`icp.preflight`); a malformed file is still the loader's
    :class:`DataError`."""
    root = Path(root)
    if name == "fashion-mnist":
        if _find_fashion_mnist(root) is None:
            return (f"fashion-mnist not found in {root / 'FashionMNIST' / 'raw'} or {DEBIAN_FASHION_MNIST}: run "
                    f"`apt-get install dataset-fashion-mnist` or {_prepare_line(name, root, '')}".rstrip())
        return None
    if name in CIFAR_FILES:
        folder, files = CIFAR_FILES[name]
        absent = [f for f in files if not (root / folder / f).is_file()]
        if absent:
            return f"{name} not found under {root} (no {root / folder / absent[0]}): {_prepare_line(name, root)}"
        return None
    if name == "cub":
        folder = _cub_split_root(root)
        if not (folder / "train").is_dir() or not (folder / "test").is_dir():
            return (f"cub: {folder} not found: run `icp data prepare --dataset cub --root {root}` (it needs the "
                    f"official {CUB_URL} under {root})")
        return None
    if name == "imagefolder":
        absent = [s for s in ("train", "test") if not (root / s).is_dir()]
        if absent:
            return (f"imagefolder: {root / absent[0]} not found (expected {root}/train/<class>/* and "
                    f"{root}/test/<class>/*)")
        return None
    return f"unknown dataset '{name}'"


def _load_cifar(name: str, root: Path, train: bool, download: bool) -> ImageArrays:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError:  # torchvision's own words ("You can use download=True") name an API, not our command
        raise DataError(missing(name, root) or f"{name} under {root} is corrupted (a checksum differs): "
                        f"{_prepare_line(name, root)}") from None
    return ImageArrays(np.ascontiguousarray(ds.data), np.asarray(ds.targets, dtype=np.int64), str(root))


def _load_imagefolder(root: Path, train: bool, image_size: int) -> tuple[ImageArrays, tuple[str, ...]]:
    from PIL import Image

    split = root / ("train" if train else "test")
    if not split.is_dir():
        raise DataError(f"imagefolder: {split} not found (expected {root}/train/<class>/* and {root}/test/<class>/*)")
    classes = tuple(sorted(d.name for d in split.iterdir() if d.is_dir()))
    if not classes:
        raise DataError(f"imagefolder: no class folders in {split}")
    files = [(p, c) for c, name in enumerate(classes) for p in sorted((split / name).iterdir()) if p.is_file()]
    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        with Image.open(path) as im:
            images[i] = np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
    return ImageArrays(images, np.array([c for _, c in files], dtype=np.int64), str(split)), classes


CUB_URL = "https://data.caltech.edu/records/65de6-vzc33 (CUB_200_2011.tgz)"


def _cub_split_root(root: Path) -> Path:
    return root / "CUB_200_2011" / "split"


def prepare_cub(root: Path) -> Path:
    """CUB-200-2011 (Wah et al. 2011) from its official archive into the image-folder layout.

    Reads ``<root>/CUB_200_2011.tgz`` (extracted once) or an extracted ``<root>/CUB_200_2011/`` holding the
    official ``images.txt`` (id, path), ``train_test_split.txt`` (id, 1 = train) and ``images/<class>/*.jpg``,
    and links every image into ``<root>/CUB_200_2011/split/{train,test}/<class>/`` (5,994 / 5,794 images).
    """
    import tarfile

    base = root / "CUB_200_2011"
    archive = root / "CUB_200_2011.tgz"
    if not (base / "images.txt").is_file():
        if not archive.is_file():
            raise DataError(f"CUB-200-2011 not found under {root}: put the official {CUB_URL} there (or its "
                            f"extracted CUB_200_2011/ folder), then run `icp data prepare --dataset cub --root {root}`")
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        if not (base / "images.txt").is_file():
            raise DataError(f"{archive}: no CUB_200_2011/images.txt inside (not the official archive?)")
    read = lambda name: dict(line.split(maxsplit=1) for line in (base / name).read_text().splitlines()
                             if line.strip())  # noqa: E731
    paths, is_train = read("images.txt"), read("train_test_split.txt")
    missing = sorted(set(paths) - set(is_train))
    if missing:
        raise DataError(f"{base}/train_test_split.txt has no entry for image id(s) {missing[:5]}")
    out = _cub_split_root(root)
    tmp = out.with_name("split.part")
    shutil.rmtree(tmp, ignore_errors=True)
    for image_id, rel in paths.items():
        rel = rel.strip()
        src = base / "images" / rel
        if not src.is_file():
            raise DataError(f"{src}: listed in images.txt but missing")
        dst = tmp / ("train" if is_train[image_id].strip() == "1" else "test") / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(src, dst.parent), dst)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32, "cifar100": 32}
FOLDER_SIZE = 64  # image-folder datasets (imagefolder, cub) are resized to data.image_size, else to this


def input_size(name: str, image_size: Optional[int] = None) -> int:
    """The height (= width) of a dataset's images as training sees them: the native size of the built-in
    datasets, ``size`` (``data.image_size``) or 64 for image folders."""
    return NATIVE_SIZE.get(name) or image_size or FOLDER_SIZE


def load_split(name: str, root: str | Path, train: bool, download: bool = False,
               image_size: Optional[int] = None) -> tuple[ImageArrays, DatasetInfo]:
    """One split of a dataset as uint8 arrays, plus the dataset's description."""
    root = Path(root)
    if name == "fashion-mnist":
        return _load_fashion_mnist(root, train, download), INFO[name]
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, train, download), INFO[name]
    if name in ("imagefolder", "cub"):
        folder = root
        if name == "cub":
            folder = _cub_split_root(root)
            if not folder.is_dir():
                raise DataError(f"cub: {folder} not found: run `icp data prepare --dataset cub --root {root}` "
                                f"(it needs the official {CUB_URL} under {root})")
        arrays, classes = _load_imagefolder(folder, train, input_size(name, image_size))
        pixels = arrays.images.reshape(-1, 3).astype(np.float64) / 255.0
        info = DatasetInfo(name, len(classes), 3, tuple(pixels.mean(0).round(4)),
                           tuple(pixels.std(0).round(4)), classes)
        return arrays, info
    raise DataError(f"unknown dataset '{name}'")


def prepare(name: str, root: str | Path, download: bool = False) -> Path:
    """Put a dataset under ``root`` in the layout the loaders read (for DVC to version)."""
    root = Path(root)
    if name == "fashion-mnist":
        target = root / "FashionMNIST" / "raw"
        src = _find_fashion_mnist(root)
        if src is None and not download:
            _load_fashion_mnist(root, True, False)  # raises the one-line DataError
        if src is None:
            _load_fashion_mnist(root, True, True)
            _load_fashion_mnist(root, False, True)
        elif src != target:
            target.mkdir(parents=True, exist_ok=True)
            for names in FASHION_MNIST_FILES.values():
                for stem in names:
                    with (gzip.open if _idx_path(src, stem).suffix == ".gz" else open)(_idx_path(src, stem), "rb") as fin:
                        atomic.write(lambda fout: shutil.copyfileobj(fin, fout), target / stem)
        return target
    if name in ("cifar10", "cifar100"):
        for train in (True, False):
            _load_cifar(name, root, train, download)
        return root
    if name == "imagefolder":
        load_split(name, root, True)
        return root
    if name == "cub":
        return prepare_cub(root)
    raise DataError(f"unknown dataset '{name}'")


# ----------------------------------------------------------------------------------------------- splits
def _split_seeds(cfg) -> tuple[int, int]:
    """(the scenario's seed, the seed of the train/val/test subsets)."""
    seed = cfg.scenario.seed if cfg.scenario.seed is not None else cfg.train.seed
    return seed, cfg.data.split_seed if cfg.data.split_seed is not None else seed


def test_split(cfg) -> tuple[DatasetInfo, ImageArrays]:
    """The configured test split alone, as :func:`build_splits` makes it (``data.test_subset`` included), without
    loading the training images: what a figure drawn from a checkpoint needs."""
    d = cfg.data
    test, info = load_split(d.dataset, d.root, False, d.download, d.image_size)
    if d.test_subset is not None and d.test_subset < len(test):
        test = test.take(scenarios.stratified_subset(test.labels, d.test_subset, _split_seeds(cfg)[1]))
    return info, test


def build_splits(cfg) -> Splits:
    """Load the configured dataset and build train (with scenario), optional val, and test splits."""
    d, sc = cfg.data, cfg.scenario
    seed, split_seed = _split_seeds(cfg)
    pool, info = load_split(d.dataset, d.root, True, d.download, d.image_size)
    info, test = test_split(cfg)
    summary: dict = {"pool_size": len(pool)}
    if d.train_subset is not None and d.train_subset < len(pool):
        pool = pool.take(scenarios.stratified_subset(pool.labels, d.train_subset, split_seed))
    val = val_clean = None
    val_summary: dict = {}
    if d.val_fraction > 0 and sc.kind == "fewshot":  # as many images per class as the cell trains on
        counts = np.bincount(pool.labels, minlength=info.num_classes)
        short = int(np.argmin(counts))
        if counts[short] < 2 * sc.shots:
            raise DataError(f"few-shot validation of scenario.shots={sc.shots} per class: {sc.shots} validation and "
                            f"{sc.shots} training images of every class need {2 * sc.shots}, class {short} has "
                            f"{counts[short]} in the training pool: fewer shots, or data.val_fraction 0 for none")
        keep, hold = scenarios.per_class_holdout(pool.labels, int(sc.shots), split_seed)
        val, pool = pool.take(hold), pool.take(keep)
        val_summary["val_shots"] = int(sc.shots)
    elif d.val_fraction > 0:
        keep, hold = scenarios.stratified_holdout(pool.labels, d.val_fraction, split_seed)
        if len(hold) == 0:
            raise DataError(f"data.val_fraction {d.val_fraction:g} of {len(pool)} training images holds out no image "
                            "of any class (round(fraction x class size) is 0): raise it, or set 0 for no validation")
        val, pool = pool.take(hold), pool.take(keep)
        if sc.kind == "noisy":  # the training labels' process, its own draw: no clean label reaches a choice
            val_clean = val.labels
            noisy = scenarios.corrupt_labels(val_clean, info.num_classes, sc.noise_type, sc.noise_rate, split_seed,
                                             dataset=d.dataset, stream="validation")
            val = ImageArrays(val.images, noisy, val.source)
            val_summary.update(val_noise_rate_measured=float(np.mean(noisy != val_clean)),
                               val_noisy_count=int(np.sum(noisy != val_clean)))
    kind_args = {"noisy": {"noise_type": sc.noise_type, "noise_rate": sc.noise_rate},
                 "fewshot": {"shots": sc.shots}}.get(sc.kind, {})
    res = scenarios.apply_scenario(pool.labels, info.num_classes, sc.kind, seed, dataset=d.dataset, **kind_args)
    train = ImageArrays(pool.images[res.indices], res.labels.astype(np.int64), pool.source)
    summary.update(res.summary, seed=seed, val_size=len(val) if val is not None else 0, test_size=len(test),
                   data_source=pool.source or str(d.root), **val_summary)
    return Splits(info, train, res.clean_labels.astype(np.int64), test, val, summary, val_clean)
