"""Training and evaluation loaders.

Both training loaders consume the same per-epoch list of index batches (uniform shuffling, or a method's own
sampler such as CS-KD's pairs) and yield :class:`icp.methods.Batch` objects with normalised float images on the
training device, so a method never knows which loader fed it.

* ``torch``: an ordinary ``DataLoader`` over per-image torchvision transforms (needed for RandAugment).
* ``resident``: the whole split lives on the device as one ``uint8`` tensor; crop and flip are applied to the
  batch on the device, as airbench does. On CUDA this removes the host from the training loop; on CPU it
  is simply the fastest path. Its randomness is drawn per epoch from a CPU generator, so it is identical on
  every device.

Augmentations (``data.augment``):

* ``standard``: random crop with zero padding of ``size // 8`` pixels (4 for 32×32 CIFAR, 3 for 28×28
  Fashion-MNIST) and horizontal flip with p = 0.5 — the CIFAR recipe of He et al. 2016 used by CS-KD/PS-KD.
* ``randaugment``: the ICP authors' recipe (their ``dataset.py``): random crop of 0.78 of the side, resized
  back (bilinear), then RandAugment(num_ops=2, magnitude=9, bilinear); no flip. ``torch`` loader only.
* ``none``: no augmentation.

Normalisation with the dataset's mean/std happens on the device, after augmentation, in one place
(:class:`Normalizer`).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch

from icp.data import DatasetInfo, ImageArrays
from icp.methods.base import Batch


def to_tensor_nchw(arrays: ImageArrays) -> torch.Tensor:
    return torch.from_numpy(arrays.images.copy()).permute(0, 3, 1, 2).contiguous()


class Normalizer:
    """uint8 NCHW batch -> normalised float (optionally channels_last) on the device."""

    def __init__(self, info: DatasetInfo, device: torch.device, channels_last: bool = False):
        mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float() * self.scale + self.shift
        return x.contiguous(memory_format=self.memory_format)


def default_index_batches(n: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> list[torch.Tensor]:
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def crop_pad(size: int) -> int:
    return max(1, size // 8)


class ResidentLoader:
    """Whole training split on the device; batched crop + flip on the device."""

    CHUNK = 8192  # images gathered, augmented and normalised per step of the epoch

    def __init__(self, arrays: ImageArrays, info: DatasetInfo, device: torch.device, augment: str,
                 channels_last: bool = False):
        if augment not in ("standard", "none"):
            raise ValueError(f"resident loader cannot apply augment '{augment}'")
        self.images = to_tensor_nchw(arrays).to(device)
        self.labels = torch.from_numpy(arrays.labels).to(device)
        self.augment = augment
        self.normalize = Normalizer(info, device, channels_last)
        self.device = device
        _, c, h, w = self.images.shape
        self.pad = crop_pad(h)
        self.rows = torch.arange(h, device=device)
        self.cols = torch.arange(w, device=device)
        self.chans = torch.arange(c, device=device).view(1, c, 1, 1)

    def _augment(self, x: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (shift[:, 0:1] + self.rows).view(-1, 1, x.shape[2] - 2 * p, 1)
        cols = (shift[:, 1:2] + self.cols).view(-1, 1, 1, x.shape[3] - 2 * p)
        b = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1, 1)
        x = x[b, self.chans, rows, cols]
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def epoch(self, index_batches: Sequence[torch.Tensor], generator: torch.Generator) -> Iterator[Batch]:
        """Gather and augment the epoch in chunks of whole batches (few large ops instead of many small ones)."""
        sizes = [len(b) for b in index_batches]
        order = torch.cat(list(index_batches)).to(self.device)  # one host-to-device copy per epoch
        n = len(order)
        if self.augment == "standard":
            shifts = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator).to(self.device)
            flips = (torch.rand(n, generator=generator) < 0.5).to(self.device)
        start = 0
        while sizes:
            take, count = 0, 0
            while count < len(sizes) and (take + sizes[count] <= self.CHUNK or count == 0):
                take += sizes[count]
                count += 1
            idx = order[start:start + take]
            x = self.images[idx]
            if self.augment == "standard":
                x = self._augment(x, shifts[start:start + take], flips[start:start + take])
            x, y = self.normalize(x), self.labels[idx]
            for xb, yb, ib in zip(x.split(sizes[:count]), y.split(sizes[:count]), idx.split(sizes[:count])):
                yield Batch(xb, yb, ib)
            start += take
            sizes = sizes[count:]


class _IndexedImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), self.labels[i], i


def _transform(augment: str, size: int):
    if augment == "none":
        return None
    from torchvision.transforms import v2

    if augment == "standard":
        return v2.Compose([v2.RandomCrop(size, padding=crop_pad(size)), v2.RandomHorizontalFlip()])
    bilinear = v2.InterpolationMode.BILINEAR
    return v2.Compose([v2.RandomCrop(int(size * 0.78)), v2.Resize(size, interpolation=bilinear, antialias=True),
                       v2.RandAugment(num_ops=2, magnitude=9, interpolation=bilinear)])


class TorchLoader:
    """Ordinary DataLoader over per-image torchvision (v2) transforms on uint8 tensors."""

    def __init__(self, arrays: ImageArrays, info: DatasetInfo, device: torch.device, augment: str,
                 num_workers: int = 0, channels_last: bool = False):
        images = to_tensor_nchw(arrays)
        self.dataset = _IndexedImages(images, torch.from_numpy(arrays.labels), _transform(augment, images.shape[-1]))
        self.normalize = Normalizer(info, device, channels_last)
        self.num_workers = num_workers
        self.device = device

    def epoch(self, index_batches: Sequence[torch.Tensor], generator: torch.Generator) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[b.tolist() for b in index_batches], num_workers=self.num_workers,
            generator=generator, pin_memory=self.device.type == "cuda")
        for x, y, idx in loader:
            yield Batch(self.normalize(x), y.to(self.device, non_blocking=True), idx.to(self.device))


def make_train_loader(kind: str, arrays: ImageArrays, info: DatasetInfo, device: torch.device, augment: str,
                      num_workers: int = 0, channels_last: bool = False):
    if kind == "auto":
        kind = "torch" if augment == "randaugment" else "resident"
    if kind == "resident":
        return ResidentLoader(arrays, info, device, augment, channels_last)
    return TorchLoader(arrays, info, device, augment, num_workers, channels_last)


class EvalLoader:
    """A split held on the device, served in order without augmentation."""

    def __init__(self, arrays: ImageArrays, info: DatasetInfo, device: torch.device, batch_size: int,
                 channels_last: bool = False):
        self.images = to_tensor_nchw(arrays).to(device)
        self.labels = torch.from_numpy(arrays.labels).to(device)
        self.normalize = Normalizer(info, device, channels_last)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.labels), self.batch_size):
            sl = slice(start, start + self.batch_size)
            yield self.normalize(self.images[sl]), self.labels[sl]


def maybe_loader(arrays: Optional[ImageArrays], *args, **kwargs) -> Optional[EvalLoader]:
    return EvalLoader(arrays, *args, **kwargs) if arrays is not None else None
