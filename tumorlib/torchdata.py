"""Torch datasets and samplers over dataset records, with decoded images cached in memory.

Decoding a 512-pixel JPEG costs about as much as a quarter of a ResNet-50 forward pass on two
cores, so every image is decoded once: training keeps the prepared slice at a little above the
model's input size (augmentation then warps from it), evaluation keeps exactly what the serving
transform produces before normalisation, so validation scores the same pixels as the apps.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .data import Record
from .errors import ImageError
from .transforms import MRITransform


class SliceDataset(Dataset):
    """Items are dicts: ``image`` (C, H, W), ``label`` (class index), ``index``, and with ``with_masks``
    ``mask`` (H, W) bool and ``has_mask`` (whether the mask is known: tumour masks, or empty for no_tumor)."""

    def __init__(
        self,
        records: Sequence[Record],
        labels: Sequence[str],
        transform: MRITransform,
        *,
        seed: int = 0,
        with_masks: bool = False,
        cache: bool = True,
        cache_scale: float = 1.15,
    ) -> None:
        self.records = list(records)
        self.labels = list(labels)
        self.targets = [self.labels.index(r.label) for r in self.records]
        self.transform = transform
        self.train = transform.augment is not None
        self.seed = seed
        self.epoch = 0
        self.with_masks = with_masks
        self.cache_on = cache
        self.cache_side = round(max(transform.height, transform.width) * cache_scale)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws from (seed, epoch, index): a resumed run sees the same images."""
        self.epoch = epoch

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        rec = self.records[i]
        try:
            image = rec.load_image()
            mask = rec.load_mask() if self.with_masks else None
        except ImageError as err:  # name the file: the decoder only knows the bytes
            raise type(err)(f"{rec.path}: {err}") from None
        image, mask = self.transform.prepare(image, mask)
        if self.train:
            # Keep a little more than the input size: the random zoom then has pixels to use.
            side = self.cache_side
            interp = cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_CUBIC
            image = np.clip(cv2.resize(image, (side, side), interpolation=interp), 0, 1)
            image = np.round(image * 65535).astype(np.uint16)
            if mask is not None:
                mask = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
        else:
            image, mask = self.transform.finish_array(image, mask)
        return image, mask

    def _get(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.cache_on:
            return self._load(i)
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return self._cache[i]

    def warm(self, threads: int = 2) -> None:
        """Decode every image now (decoders release the GIL, so threads overlap)."""
        if not self.cache_on:
            return
        todo = [i for i in range(len(self)) if i not in self._cache]
        with ThreadPoolExecutor(threads) as pool:
            for i, item in zip(todo, pool.map(self._load, todo), strict=True):
                self._cache[i] = item

    def __getitem__(self, i: int) -> dict:
        image, mask = self._get(i)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, mask = self.transform.finish_array(image.astype(np.float32) / 65535.0, mask, rng)
        item = {"image": self.transform.to_tensor(image), "label": self.targets[i], "index": i}
        if self.with_masks:
            known = mask is not None or self.records[i].label == "no_tumor"
            if mask is None:
                mask = np.zeros((self.transform.height, self.transform.width), dtype=bool)
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
            item["has_mask"] = known
        return item


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced, with ``weights``) order drawn from (seed, epoch) alone."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, weights: Sequence[float] | None = None) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=g).tolist())


def balanced_weights(targets: Sequence[int], n_classes: int) -> np.ndarray:
    """Per-item sampling weights that make every class equally likely."""
    targets = np.asarray(targets)
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return 1.0 / counts[targets]
