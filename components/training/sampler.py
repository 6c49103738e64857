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
                 label_maps: np.ndarray | None = None, domains: np.ndarray | None = None,
                 attributes: np.ndarray | None = None, attribute_mask: np.ndarray | None = None):
        index = np.arange(rank, images.shape[0], world)
        if index.size == 0:
            raise ValueError(f"worker {rank} of {world} gets no images: the dataset has {images.shape[0]}")
        self.images = _unit_range(images[index])
        self.labels = None if labels is None else torch.from_numpy(labels[index]).long()
        self.inputs = None if inputs is None else _unit_range(inputs[index])
        # label maps stay uint8 until batched: int64 maps of a whole shard would take 8x the memory
        self.label_maps = None if label_maps is None else torch.from_numpy(np.ascontiguousarray(label_maps[index]))
        self.domains = None if domains is None else torch.from_numpy(domains[index]).long()
        self.attributes = None if attributes is None else torch.from_numpy(attributes[index]).float()
        self.attribute_mask = None if attribute_mask is None else torch.from_numpy(attribute_mask[index]).float()
        self.batch_size = min(batch_size, index.size)
        if self.domains is not None:
            self._domain_rows = [torch.nonzero(self.domains == d).flatten() for d in torch.unique(self.domains)]
            per_domain = min(len(rows) for rows in self._domain_rows)
            # every batch holds each domain equally: a multiple of the domain count, at most what each has
            count = len(self._domain_rows)
            self.batch_size = max(count, min(batch_size, per_domain * count) // count * count)
        self.generator = torch.Generator().manual_seed(seed * 1000003 + rank)
        self.order = self._epoch_order()
        self.position = 0

    def _epoch_order(self) -> torch.Tensor:
        """A shuffle of the rows; with domains, one shuffle per domain interleaved, cut to the smallest domain,
        so that every run of batch_size rows is balanced (the larger domains' other rows come in later epochs)."""
        if self.domains is None:
            return torch.randperm(self.images.size(0), generator=self.generator)
        per_domain = min(len(rows) for rows in self._domain_rows)
        shuffled = [rows[torch.randperm(len(rows), generator=self.generator)[:per_domain]] for rows in self._domain_rows]
        return torch.stack(shuffled, dim=1).flatten()

    def next_batch(self) -> ImageBatch:
        if self.position + self.batch_size > self.order.numel():
            self.order = self._epoch_order()
            self.position = 0
        pick = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self._rows(pick)

    def first_rows(self, n: int) -> ImageBatch:
        """The shard's first ``n`` rows (with domains: the first of each domain in turn), unshuffled: the fixed
        real conditions of the progress grids."""
        if self.domains is None:
            return self._rows(torch.arange(min(n, self.images.size(0))))
        per_domain = max(1, n // len(self._domain_rows))
        return self._rows(torch.stack([rows[:per_domain] for rows in self._domain_rows], dim=1).flatten()[:n])

    def _rows(self, pick: torch.Tensor) -> ImageBatch:
        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[pick]

        maps = rows(self.label_maps)
        return ImageBatch(self.images[pick], rows(self.labels), rows(self.inputs), None if maps is None else maps.long(),
                          rows(self.domains), rows(self.attributes), rows(self.attribute_mask))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sampler_generator": self.generator.get_state(), "sampler_order": self.order,
                "sampler_position": torch.tensor(self.position)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "sampler_generator" not in state or state["sampler_order"].numel() != self.order.numel():
            return  # a different sharding (worker count changed): keep the fresh shuffle
        self.generator.set_state(state["sampler_generator"])
        self.order = state["sampler_order"].clone()
        self.position = int(state["sampler_position"])
