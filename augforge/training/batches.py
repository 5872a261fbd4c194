"""The data order and the batch source: which train-split images each step sees, as tensors.

The order is a pure function of ``(seed, epoch)`` — one seeded permutation per epoch, this
rank's share, the consumed part skipped on resume — so nothing depends on a DataLoader
iterator's state and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from augforge.config import RunConfig
from augforge.errors import ConfigError
from augforge.training.rng import derived_seed


class EpochOrder:
    """Batches of train-split indices for each epoch, a pure function of ``(seed, epoch)``.

    ``balance``: each draw picks a class uniformly, then an image of it (sampling with
    replacement, as a class-balanced sampler does); an epoch has as many draws as images.
    Under torchrun each rank takes every ``world``-th index of the global order (the
    DistributedSampler layout). Epochs hold whole batches only (the tail is dropped); a
    dataset smaller than one global batch is repeated within the epoch.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, balance: bool, rank: int = 0, world: int = 1):
        self.labels = np.asarray(labels)
        self.n = len(self.labels)
        if self.n == 0:
            raise ConfigError("the train split is empty; lower data.val_fraction/test_fraction or use more images")
        self.batch_size, self.seed, self.balance, self.rank, self.world = batch_size, seed, balance, rank, world
        per_draw = max(self.n, batch_size * world)
        self.draws = per_draw - per_draw % (batch_size * world)
        self.batches_per_epoch = self.draws // (batch_size * world)
        if balance:
            counts = np.bincount(self.labels)
            w = 1.0 / counts[self.labels]
            self.p = w / w.sum()
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch(self, epoch: int) -> np.ndarray:
        """``int64[batches_per_epoch, batch_size]`` for this rank."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch, 0x0DA7A])
        if self.balance:
            order = rng.choice(self.n, size=self.draws, replace=True, p=self.p)
        else:
            reps = -(-self.draws // self.n)
            order = np.concatenate([rng.permutation(self.n) for _ in range(reps)])[: self.draws]
        mine = order[self.rank :: self.world].reshape(self.batches_per_epoch, self.batch_size).astype(np.int64)
        self._cache = (epoch, mine)
        return mine


class _SeededItems(torch.utils.data.Dataset):
    """Items are fetched by ``(index, seed)``: the augmentation is reseeded per item."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        i, seed = key
        aug = getattr(self.dataset, "augment", None)
        if aug is not None and hasattr(aug, "set_random_seed"):
            aug.set_random_seed(seed)
        return self.dataset[i]


class BatchSource:
    """Turns index batches into device tensors ``(x float[B,3,H,W] in [-1,1], y int64[B])``.

    Fast path (``data.augment == "none"``, no workers): the whole uint8 train split lives in
    one tensor (on the GPU under CUDA) and a batch is a gather + one conversion. Otherwise a
    DataLoader over ``augforge.data.TorchImages`` fetches the listed batches.
    """

    def __init__(self, arrays, cfg: RunConfig, device: torch.device, channels_last: bool):
        self.device, self.channels_last = device, channels_last
        self.augment = cfg.data.augment
        self.num_workers = cfg.train.num_workers
        self.fast = self.augment in ("", "none") and self.num_workers == 0
        self.labels = torch.as_tensor(np.asarray(arrays.labels), dtype=torch.int64).to(device)
        if self.fast:
            images = torch.from_numpy(np.ascontiguousarray(arrays.images))  # uint8 NHWC
            self.images = images.to(device) if device.type == "cuda" else images
        else:
            from augforge import data

            self.dataset = _SeededItems(data.TorchImages(arrays, augment=self.augment, seed=cfg.train.seed))
        self.seed = cfg.train.seed
        self._iter = None
        self._key = None

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def get(self, epoch: int, pos: int, batches: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batches[pos]
        if self.fast:
            t = torch.from_numpy(idx)
            if self.device.type == "cuda":
                t = t.to(self.device, non_blocking=True)
            return self._convert(self.images.index_select(0, t)), self.labels.index_select(0, t.to(self.labels.device))
        if self._key != (epoch, pos):  # (re)start a loader at this position of this epoch
            # each item carries its own augmentation seed, a function of (seed, epoch, batch, slot):
            # the same images get the same augmentation whatever the workers or a resume do
            base = (self.seed * 1_000_003 + epoch) * 100_003
            keyed = [[(int(i), (base + (pos + b) * len(ib) + j) % 2**32) for j, i in enumerate(ib)]
                     for b, ib in enumerate(batches[pos:])]
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=keyed, num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", persistent_workers=False,
                generator=torch.Generator().manual_seed(derived_seed(epoch, pos, 17)),
            )
            self._iter = iter(loader)
        x, y = next(self._iter)
        self._key = (epoch, pos + 1)
        return self._convert(x), y.to(self.device, non_blocking=True).long()

