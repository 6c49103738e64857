"""Batches from in-memory tensors: each worker keeps its shard and shuffles it every epoch."""

from __future__ import annotations

import numpy as np
import torch

from components.families import ImageBatch


def _unit_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(127.5).sub_(1.0)


class ShardSampler:
    """Worker ``rank`` of ``world`` owns images rank, rank+world, ...; batches never decode or copy files.

    Images are converted to float in [-1, 1] once, up front. Its state (generator,
    permutation, position) is checkpointed so a resumed run draws the same batches.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, rank: int, world: int,
                 batch_size: int, seed: int, inputs: np.ndarray | None = None,
                 label_maps: np.ndarray | None = None):
        index = np.arange(rank, images.shape[0], world)
        if index.size == 0:
            raise ValueError(f"worker {rank} of {world} gets no images: the dataset has {images.shape[0]}")
        self.images = _unit_range(images[index])
        self.labels = None if labels is None else torch.from_numpy(labels[index]).long()
        self.inputs = None if inputs is None else _unit_range(inputs[index])
        # label maps stay uint8 until batched: int64 maps of a whole shard would take 8x the memory
        self.label_maps = None if label_maps is None else torch.from_numpy(np.ascontiguousarray(label_maps[index]))
        self.batch_size = min(batch_size, index.size)
        self.generator = torch.Generator().manual_seed(seed * 1000003 + rank)
        self.order = torch.randperm(index.size, generator=self.generator)
        self.position = 0

    def next_batch(self) -> ImageBatch:
        if self.position + self.batch_size > self.order.numel():
            self.order = torch.randperm(self.order.numel(), generator=self.generator)
            self.position = 0
        pick = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return ImageBatch(self.images[pick], None if self.labels is None else self.labels[pick],
                          None if self.inputs is None else self.inputs[pick],
                          None if self.label_maps is None else self.label_maps[pick].long())

    def first_rows(self, n: int) -> ImageBatch:
        """The shard's first ``n`` rows, unshuffled: the fixed real conditions of the progress grids."""
        pick = torch.arange(min(n, self.images.size(0)))
        return ImageBatch(self.images[pick], None if self.labels is None else self.labels[pick],
                          None if self.inputs is None else self.inputs[pick],
                          None if self.label_maps is None else self.label_maps[pick].long())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sampler_generator": self.generator.get_state(), "sampler_order": self.order,
                "sampler_position": torch.tensor(self.position)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "sampler_generator" not in state or state["sampler_order"].numel() != self.order.numel():
            return  # a different sharding (worker count changed): keep the fresh shuffle
        self.generator.set_state(state["sampler_generator"])
        self.order = state["sampler_order"].clone()
        self.position = int(state["sampler_position"])
