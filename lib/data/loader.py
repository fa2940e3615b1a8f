"""The DataLoader of a split, as the engine trains with it (predict.py, evaluate.py, lib/bench/quantize.py and
lib_kd/speed_kd.py load their data the same way)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from lib.data.augmentation import seed_worker
from lib.runtime import resolve_workers


def make_loader(dataset, c: Mapping, train: bool, device: torch.device, generator: torch.Generator | None,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """The DataLoader of a run's split: BATCH_SIZE, NUM_WORKERS (resolved for this machine) and, under torchrun,
    a DistributedSampler (train) or a plain shard (val); workers seeded by lib.data.augmentation.seed_worker."""
    workers = resolve_workers(c["NUM_WORKERS"])
    sampler = None
    if world_size > 1:
        if train:
            sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=c["SEED"])
        else:  # a plain shard: every item exactly once over all ranks, so reduced metrics are exact
            dataset = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=c["BATCH_SIZE"], shuffle=train and sampler is None, sampler=sampler,
                      drop_last=train and len(dataset) > c["BATCH_SIZE"], num_workers=workers,
                      worker_init_fn=seed_worker, generator=generator, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)
