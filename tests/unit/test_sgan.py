"""SGAN's fixed labelled subset: how it is chosen, how the sampler serves it, and D's loss on it (hand values)."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from components.config import EvaluationConfig
from components.data.images import to_unit_range
from components.data.prepared import PreparedDataset, labelled_subset
from components.errors import ConfigError, DataError
from components.evaluation.evaluate import real_split
from components.evaluation.extractors import held_out_split
from components.families import DataSpec, ImageBatch, RealSplit, build_family, get_family
from components.families.sgan import semi_supervised_d_loss
from components.training.sampler import HIDDEN_LABEL, ShardSampler

LN2, LN3 = math.log(2.0), math.log(3.0)
SPEC = DataSpec(channels=1, image_size=8, num_classes=3)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# --- choosing the subset -------------------------------------------------------------------------


def test_subset_takes_per_class_rows_of_each_class_among_the_candidates_only():
    labels = np.array([0, 1, 0, 1, 2, 2, 0])
    # candidates 1, 2, 5, 6: class 0 -> {2, 6}, class 1 -> {1}, class 2 -> {5}
    chosen = labelled_subset(labels, 1, seed=0, candidates=np.array([6, 1, 2, 5]))
    assert len(chosen) == 3 and {1, 5} <= set(chosen.tolist()) and len({2, 6} & set(chosen.tolist())) == 1
    assert chosen.tolist() == sorted(chosen.tolist())
    with pytest.raises(DataError, match="class 1 has 1 candidate rows; 2 per class"):
        labelled_subset(labels, 2, seed=0, candidates=np.array([1, 2, 5, 6]))


def test_subset_is_stratified_deterministic_and_seeded():
    labels = np.arange(300) % 10
    chosen = labelled_subset(labels, 10, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [10] * 10
    assert np.array_equal(labelled_subset(labels, 10, seed=3), chosen)
    assert not np.array_equal(labelled_subset(labels, 10, seed=4), chosen)
    # a larger count keeps the smaller one's rows
    assert set(chosen.tolist()) <= set(labelled_subset(labels, 20, seed=3).tolist())


def test_subset_is_disjoint_from_the_evaluators_held_out_rows():
    labels = np.arange(500) % 10
    train, held_out = held_out_split(len(labels), seed=0)
    chosen = labelled_subset(labels, 10, seed=0, candidates=train)
    assert len(chosen) == 100 and not set(chosen.tolist()) & set(held_out.tolist())


def test_choosing_among_a_sorted_subset_of_rows_is_choosing_with_those_candidates():
    labels = np.random.default_rng(1).integers(0, 4, 200)
    rows = np.sort(np.random.default_rng(2).choice(200, 150, replace=False))
    assert np.array_equal(rows[labelled_subset(labels[rows], 5, seed=7)], labelled_subset(labels, 5, 7, rows))


def test_task_metrics_picks_from_the_real_split_exactly_the_images_training_chose():
    labels = np.arange(400) % 4
    pixels = np.random.default_rng(0).integers(0, 256, (400, 1, 8, 8)).astype(np.uint8)
    prepared = PreparedDataset(pixels, labels, {"count": 400, "classes": list("abcd")})
    cfg = EvaluationConfig(seed=5)
    real = real_split(prepared, SimpleNamespace(predicts_data_classes=False), cfg)
    trained_on = labelled_subset(labels, 3, seed=0, candidates=np.sort(held_out_split(400, cfg.seed)[0]))
    picked = labelled_subset(real.train_labels.numpy(), 3, seed=0)
    assert torch.equal(real.train_images[picked], torch.from_numpy(to_unit_range(pixels[trained_on])))
    assert torch.equal(real.train_labels[picked], torch.from_numpy(labels[trained_on]))


# --- the sampler ---------------------------------------------------------------------------------


def row_ids(batch: ImageBatch) -> list[int]:
    """The images below are 1 x 1 pixels whose value is their row."""
    return ((batch.images.flatten() + 1) * 127.5).round().long().tolist()


def id_images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)


LABELS = np.arange(40) % 4
SUBSET = np.array([0, 1, 2, 3, 4, 5, 6, 7])  # two rows of each class


def test_every_batch_holds_the_fixed_share_of_subset_rows_with_only_their_labels_visible():
    sampler = ShardSampler(id_images(40), LABELS, 0, 1, batch_size=8, seed=0, labelled=SUBSET, labelled_share=0.25)
    for _ in range(12):
        batch = sampler.next_batch()
        ids = row_ids(batch)
        assert batch.labelled.tolist() == [True, True] + [False] * 6  # round(8 * 0.25) = 2 per batch
        assert {ids[0], ids[1]} <= set(SUBSET.tolist()) and ids[0] != ids[1]
        assert batch.labels[:2].tolist() == LABELS[ids[:2]].tolist()
        assert batch.labels[2:].tolist() == [HIDDEN_LABEL] * 6  # subset rows drawn as unlabelled stay hidden too
    # 12 batches x 2 = 24 draws cycle through the 8 subset rows three times, each once per cycle
    sampler = ShardSampler(id_images(40), LABELS, 0, 1, batch_size=8, seed=0, labelled=SUBSET, labelled_share=0.25)
    draws = [row_ids(sampler.next_batch())[:2] for _ in range(12)]
    for cycle in range(3):
        assert sorted(sum(draws[4 * cycle:4 * cycle + 4], [])) == SUBSET.tolist()


def test_with_two_workers_each_gets_its_share_of_every_class():
    shares = []
    for rank in (0, 1):
        sampler = ShardSampler(id_images(40), LABELS, rank, 2, batch_size=4, seed=0, labelled=SUBSET,
                               labelled_share=0.5)
        seen = set()
        for _ in range(4):
            batch = sampler.next_batch()
            assert batch.labelled.sum().item() == 2
            seen |= {row for row, flag in zip(row_ids(batch), batch.labelled.tolist()) if flag}
        shares.append(seen)
        assert sorted(LABELS[sorted(seen)].tolist()) == [0, 1, 2, 3]  # one row of each class per worker
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(SUBSET.tolist())


def test_share_rounds_and_keeps_one_row_of_each_kind():
    def count(batch_size, share):
        return ShardSampler(id_images(100), np.arange(100) % 4, 0, 1, batch_size, 0, labelled=SUBSET,
                            labelled_share=share).next_batch().labelled.sum().item()

    assert (count(64, 0.25), count(10, 0.25), count(4, 0.01), count(4, 0.99)) == (16, 2, 1, 3)
    with pytest.raises(ValueError, match="0 < labelled_share < 1"):
        count(8, 0.0)


def test_without_a_subset_batches_are_as_before():
    sampler = ShardSampler(id_images(40), LABELS, 0, 1, batch_size=8, seed=0)
    batch = sampler.next_batch()
    assert batch.labelled is None and batch.labels.tolist() == LABELS[row_ids(batch)].tolist()
    assert "sampler_labelled_rows" not in sampler.state_dict()


def test_checkpoint_records_the_subset_resumes_identically_and_refuses_another_subset():
    def make(subset, seed=0):
        return ShardSampler(id_images(40), LABELS, 0, 1, 8, seed, labelled=subset, labelled_share=0.25)

    first = make(SUBSET)
    first.next_batch()
    state = first.state_dict()
    assert state["sampler_labelled_rows"].tolist() == SUBSET.tolist()
    expected = [row_ids(first.next_batch()) for _ in range(6)]
    resumed = make(SUBSET, seed=99)
    resumed.load_state_dict(state)
    assert [row_ids(resumed.next_batch()) for _ in range(6)] == expected
    with pytest.raises(ValueError, match="labelled subset"):
        make(SUBSET + 8).load_state_dict(state)


def test_a_subset_needs_labels_and_distinct_rows():
    with pytest.raises(ValueError, match="without labels"):
        ShardSampler(id_images(40), None, 0, 1, 8, 0, labelled=SUBSET, labelled_share=0.25)
    with pytest.raises(ValueError, match="distinct"):
        ShardSampler(id_images(40), LABELS, 0, 1, 8, 0, labelled=np.array([1, 1]), labelled_share=0.25)


# --- D's loss ------------------------------------------------------------------------------------

# K = 2 classes plus fake. Real rows: p = (2, 1, 1) / 4, (1, 3, 1) / 5, (1, 1, 2) / 4; fake rows: p_fake 1/3, 1/2.
REAL = t([LN2, 0.0, 0.0], [0.0, LN3, 0.0], [0.0, 0.0, LN2])
FAKE = t([0.0, 0.0, 0.0], [0.0, 0.0, LN2])
FLAGS = torch.tensor([True, True, False])
# supervised, rows 0 and 1 only: -log 2/4 = ln 2 (label 0), -log 3/5 = ln 5/3 (label 1)
SUPERVISED = (LN2 + math.log(5 / 3)) / 2
# real, all rows: -log(1 - p_fake) = ln 4/3, ln 5/4, ln 2; fake: -log p_fake = ln 3, ln 2
UNSUPERVISED = (math.log(4 / 3) + math.log(5 / 4) + LN2) / 3 + (LN3 + LN2) / 2


def test_d_loss_is_supervised_cross_entropy_on_flagged_rows_plus_the_unsupervised_terms():
    loss, logs = semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 1, 1]), FLAGS)
    assert logs["d_sup"] == pytest.approx(SUPERVISED)
    assert logs["d_unsup"] == pytest.approx(UNSUPERVISED)
    assert loss.item() == pytest.approx(SUPERVISED + UNSUPERVISED)
    assert logs["labelled"] == 2.0 and logs["d_accuracy"] == 1.0  # rows 0 and 1 argmax to their labels


def test_a_hidden_rows_label_does_not_change_the_loss_and_a_flagged_rows_does():
    value = semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 1, 1]), FLAGS)[0].item()
    for hidden in (0, 1, HIDDEN_LABEL):
        assert semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 1, hidden]), FLAGS)[0].item() == value
    # row 1 labelled 0 instead: -log 1/5 = ln 5 in place of ln 5/3
    changed = semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 0, 1]), FLAGS)[0].item()
    assert changed == pytest.approx((LN2 + math.log(5)) / 2 + UNSUPERVISED)


def test_without_flags_there_is_no_supervision_even_with_labels():
    loss, logs = semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 1, 1]), None)
    assert loss.item() == pytest.approx(UNSUPERVISED) and "d_sup" not in logs


def test_no_flagged_row_gives_a_zero_supervised_term():
    loss, logs = semi_supervised_d_loss(REAL, FAKE, torch.tensor([0, 1, 1]), torch.zeros(3, dtype=torch.bool))
    assert logs["d_sup"] == 0.0 and loss.item() == pytest.approx(UNSUPERVISED) and "d_accuracy" not in logs


class TableLogits(nn.Module):
    """D whose logits are the row of ``table`` named by the image's first pixel (rounded)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x.flatten(1)[:, 0].round().long()]


class ZeroGenerator(nn.Module):
    def forward(self, z):
        return torch.zeros(z.size(0), 1, 8, 8)


def test_the_family_feeds_d_real_and_generated_images_into_that_loss():
    family = build_family("sgan", SPEC, get_family("sgan").tiny)
    # row 0 of the table scores the generated (all-zero) images; real images pick rows 1..3
    table = torch.cat([t([0.0, 0.0, 0.0, LN3]), t([LN2, 0.0, 0.0, 0.0], [0.0, LN3, 0.0, 0.0], [0.0, 0.0, 0.0, LN2])])
    images = torch.zeros(3, 1, 8, 8)
    images[:, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    nets = {"G": ZeroGenerator(), "D": TableLogits(table)}
    loss, logs = family.discriminator_loss(ImageBatch(images, torch.tensor([0, 1, 2]), labelled=FLAGS), nets)
    # K = 3: supervised -log 2/5 (row 1, label 0), -log 3/6 (row 2, label 1); real: -log(1 - p_fake) =
    # ln 5/4, ln 6/5, ln 5/3; fake: p_fake = 3/6 for every generated image -> ln 2
    supervised = (math.log(5 / 2) + LN2) / 2
    unsupervised = (math.log(5 / 4) + math.log(6 / 5) + math.log(5 / 3)) / 3 + LN2
    assert loss.item() == pytest.approx(supervised + unsupervised)
    relabelled = ImageBatch(images, torch.tensor([0, 1, 0]), labelled=FLAGS)
    assert family.discriminator_loss(relabelled, nets)[0].item() == loss.item()


def test_config_refuses_a_share_outside_zero_to_one():
    with pytest.raises(ConfigError, match="labelled_share must be between 0 and 1"):
        build_family("sgan", SPEC, {"labelled_share": 1.0})


# --- the supervised baseline ---------------------------------------------------------------------


def test_task_metrics_trains_the_baseline_on_the_subset_chosen_from_the_train_split(monkeypatch):
    torch.manual_seed(0)
    family = build_family("sgan", SPEC, {**get_family("sgan").tiny, "labelled_per_class": 2, "baseline_steps": 1})
    train_labels = torch.arange(30) % 3
    real = RealSplit(torch.rand(30, 1, 8, 8) * 2 - 1, train_labels, torch.rand(6, 1, 8, 8) * 2 - 1,
                     torch.arange(6) % 3)
    seen = {}
    original = family.supervised_baseline

    def spy(images, labels):
        seen.update(images=images, labels=labels)
        return original(images, labels)

    monkeypatch.setattr(family, "supervised_baseline", spy)
    scores = family.task_metrics(real)
    pick = labelled_subset(train_labels.numpy(), 2, seed=0)
    assert torch.equal(seen["images"], real.train_images[pick]) and torch.equal(seen["labels"], train_labels[pick])
    assert seen["labels"].bincount().tolist() == [2, 2, 2] and scores["labelled_images"] == 6.0


def test_the_launcher_hands_sgan_its_subset_and_other_families_none(tmp_path):
    from components.config import load_params
    from components.data import load_prepared, prepare_dataset
    from components.evaluation.extractors import real_split_rows
    from components.training.launcher import labelled_rows

    prepare_dataset("digits", tmp_path / "digits")
    prepared = load_prepared(tmp_path / "digits")
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml", [])
    rows = labelled_rows(params, "sgan", prepared)
    assert np.bincount(prepared.labels[rows], minlength=10).tolist() == [10] * 10
    _, held_out = real_split_rows(len(prepared.images), params.evaluation.seed)
    assert not set(rows.tolist()) & set(held_out.tolist())
    assert labelled_rows(params, "dcgan", prepared) is None
