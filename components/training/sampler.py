"""Batches from in-memory tensors: each worker keeps its shard and shuffles it every epoch.

Semi-supervised training passes a fixed labelled subset (row indices): every batch
then holds a fixed share of those rows, flagged in ``ImageBatch.labelled``, and
every other row's label is withheld (``HIDDEN_LABEL``), so a family cannot use it
even by mistake.
"""

from __future__ import annotations

import numpy as np
import torch

from components.families import ImageBatch

HIDDEN_LABEL = -1  # an unlabelled row's label: outside every class, so a loss that reads it fails loudly


def _unit_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(127.5).sub_(1.0)


class ShardSampler:
    """Worker ``rank`` of ``world`` owns images rank, rank+world, ...; batches never decode or copy files.

    Images are converted to float in [-1, 1] once, up front. Its state (generator,
    permutation, position) is checkpointed so a resumed run draws the same batches.

    With ``labelled`` (row indices of the fixed labelled subset), worker ``rank`` also
    owns every ``world``-th of those rows in class order, so each worker holds its share of
    every class; they are kept after the shard, and each batch takes ``labelled_share`` of
    its rows from them (cycling through them in shuffled epochs of their own) and the rest
    from the shard. All shard rows, the labelled ones among them, stay unlabelled there.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, rank: int, world: int,
                 batch_size: int, seed: int, inputs: np.ndarray | None = None,
                 label_maps: np.ndarray | None = None, domains: np.ndarray | None = None,
                 attributes: np.ndarray | None = None, attribute_mask: np.ndarray | None = None,
                 labelled: np.ndarray | None = None, labelled_share: float = 0.0):
        index = np.arange(rank, images.shape[0], world)
        if index.size == 0:
            raise ValueError(f"worker {rank} of {world} gets no images: the dataset has {images.shape[0]}")
        self.shard_size = index.size
        self.labelled_rows = None if labelled is None else _check_labelled(labelled, labels, images.shape[0])
        if self.labelled_rows is not None:
            if domains is not None:
                raise ValueError("a labelled subset and domain-balanced batches cannot be combined")
            index = np.concatenate([index, _rank_share(self.labelled_rows, labels, rank, world)])
        self.images = _unit_range(images[index])
        self.labels = None if labels is None else torch.from_numpy(labels[index]).long()
        if self.labelled_rows is not None:
            self.labels[:self.shard_size] = HIDDEN_LABEL
        self.inputs = None if inputs is None else _unit_range(inputs[index])
        # label maps stay uint8 until batched: int64 maps of a whole shard would take 8x the memory
        self.label_maps = None if label_maps is None else torch.from_numpy(np.ascontiguousarray(label_maps[index]))
        self.domains = None if domains is None else torch.from_numpy(domains[index]).long()
        self.attributes = None if attributes is None else torch.from_numpy(attributes[index]).float()
        self.attribute_mask = None if attribute_mask is None else torch.from_numpy(attribute_mask[index]).float()
        self.batch_size = min(batch_size, self.shard_size)
        if self.domains is not None:
            self._domain_rows = [torch.nonzero(self.domains == d).flatten() for d in torch.unique(self.domains)]
            per_domain = min(len(rows) for rows in self._domain_rows)
            # every batch holds each domain equally: a multiple of the domain count, at most what each has
            count = len(self._domain_rows)
            self.batch_size = max(count, min(batch_size, per_domain * count) // count * count)
        self.labelled_count = 0 if self.labelled_rows is None else _labelled_count(self.batch_size, labelled_share)
        self.generator = torch.Generator().manual_seed(seed * 1000003 + rank)
        self.order = self._epoch_order()
        self.position = 0
        self.labelled_order = self._labelled_epoch_order()
        self.labelled_position = 0

    def _epoch_order(self) -> torch.Tensor:
        """A shuffle of the rows; with domains, one shuffle per domain interleaved, cut to the smallest domain,
        so that every run of batch_size rows is balanced (the larger domains' other rows come in later epochs)."""
        if self.domains is None:
            return torch.randperm(self.shard_size, generator=self.generator)
        per_domain = min(len(rows) for rows in self._domain_rows)
        shuffled = [rows[torch.randperm(len(rows), generator=self.generator)[:per_domain]] for rows in self._domain_rows]
        return torch.stack(shuffled, dim=1).flatten()

    def _labelled_epoch_order(self) -> torch.Tensor:
        """A shuffle of this worker's labelled rows, as positions after the shard (empty without a subset)."""
        count = self.images.size(0) - self.shard_size
        return self.shard_size + torch.randperm(count, generator=self.generator) if count else torch.zeros(0).long()

    def next_batch(self) -> ImageBatch:
        unlabelled = self.batch_size - self.labelled_count
        if self.position + unlabelled > self.order.numel():
            self.order = self._epoch_order()
            self.position = 0
        pick = self.order[self.position:self.position + unlabelled]
        self.position += unlabelled
        if self.labelled_count:
            pick = torch.cat([self._take_labelled(self.labelled_count), pick])
        return self._rows(pick)

    def _take_labelled(self, count: int) -> torch.Tensor:
        """The next ``count`` labelled rows; a batch repeats one only when it asks for more than the worker has."""
        parts = []
        while count > 0:
            if self.labelled_position == self.labelled_order.numel():
                self.labelled_order = self._labelled_epoch_order()
                self.labelled_position = 0
            part = self.labelled_order[self.labelled_position:self.labelled_position + count]
            self.labelled_position += part.numel()
            count -= part.numel()
            parts.append(part)
        return torch.cat(parts)

    def first_rows(self, n: int) -> ImageBatch:
        """The shard's first ``n`` rows (with domains: the first of each domain in turn), unshuffled: the fixed
        real conditions of the progress grids."""
        if self.domains is None:
            return self._rows(torch.arange(min(n, self.shard_size)))
        per_domain = max(1, n // len(self._domain_rows))
        return self._rows(torch.stack([rows[:per_domain] for rows in self._domain_rows], dim=1).flatten()[:n])

    def _rows(self, pick: torch.Tensor) -> ImageBatch:
        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[pick]

        maps = rows(self.label_maps)
        labelled = None if self.labelled_rows is None else pick >= self.shard_size
        return ImageBatch(self.images[pick], rows(self.labels), rows(self.inputs), None if maps is None else maps.long(),
                          rows(self.domains), rows(self.attributes), rows(self.attribute_mask), labelled)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"sampler_generator": self.generator.get_state(), "sampler_order": self.order,
                 "sampler_position": torch.tensor(self.position)}
        if self.labelled_rows is not None:  # the whole subset, so every checkpoint records which labels trained
            state |= {"sampler_labelled_rows": torch.from_numpy(self.labelled_rows),
                      "sampler_labelled_order": self.labelled_order,
                      "sampler_labelled_position": torch.tensor(self.labelled_position)}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "sampler_generator" not in state:
            return
        self._check_same_subset(state.get("sampler_labelled_rows"))
        if state["sampler_order"].numel() != self.order.numel():
            return  # a different sharding (worker count changed): keep the fresh shuffle
        self.generator.set_state(state["sampler_generator"])
        self.order = state["sampler_order"].clone()
        self.position = int(state["sampler_position"])
        if self.labelled_rows is not None:
            self.labelled_order = state["sampler_labelled_order"].clone()
            self.labelled_position = int(state["sampler_labelled_position"])

    def _check_same_subset(self, recorded: torch.Tensor | None) -> None:
        """Refuse to resume on another labelled subset: the run would have learnt from both."""
        mine = None if self.labelled_rows is None else torch.from_numpy(self.labelled_rows)
        if (recorded is None) != (mine is None) or (mine is not None and not torch.equal(recorded, mine)):
            raise ValueError(f"the checkpoint was trained on labelled subset "
                             f"{_describe(recorded)}, this run has {_describe(mine)}; the labelled rows, the "
                             "data or the evaluation split changed: start a new run")


def _check_labelled(labelled: np.ndarray, labels: np.ndarray | None, count: int) -> np.ndarray:
    """The subset's row indices, sorted, int64; they must be distinct rows of labelled data."""
    rows = np.asarray(labelled, dtype=np.int64)
    if labels is None:
        raise ValueError("a labelled subset was given for data without labels")
    if rows.ndim != 1 or rows.size == 0 or np.unique(rows).size != rows.size or rows.min() < 0 or rows.max() >= count:
        raise ValueError(f"labelled rows must be distinct indices in 0..{count - 1}, got {rows.size} of them")
    return np.sort(rows)


def _rank_share(rows: np.ndarray, labels: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Every ``world``-th of the labelled rows in (class, row) order: each worker gets its share of every class."""
    by_class = rows[np.lexsort((rows, labels[rows]))]
    mine = by_class[rank::world]
    if mine.size == 0:
        raise ValueError(f"worker {rank} of {world} gets none of the {rows.size} labelled rows")
    return mine


def _labelled_count(batch_size: int, share: float) -> int:
    """Labelled rows per batch: the share rounded, at least one, and at least one unlabelled row beside them."""
    if not 0 < share < 1 or batch_size < 2:
        raise ValueError(f"a labelled subset needs 0 < labelled_share < 1 and batches of 2 or more, "
                         f"got {share} and {batch_size}")
    return min(max(1, round(batch_size * share)), batch_size - 1)


def _describe(rows: torch.Tensor | None) -> str:
    return "none" if rows is None else f"{rows.numel()} rows (first {rows[:5].tolist()})"
