"""StarGAN: classification terms and the mask vector against hand values, the phases wired with stub networks,
target permutations, the two heads of D, shapes at 16/32/64 and the export."""

import math

import numpy as np

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.stargan import (assemble_labels, dataset_of_rows, domain_classification_loss,
                                         masked_attribute_loss, reconstruction_loss, target_rows)

LN2 = math.log(2)
DOMAINS = DataSpec(channels=3, image_size=16, num_domains=3)
ATTRIBUTES = DataSpec(channels=3, image_size=16, num_domains=3, num_attributes=5)
TWO_SETS = DataSpec(channels=3, image_size=16, num_attributes=5, label_sets=(3, 2))


def tiny(spec=ATTRIBUTES, **overrides):
    torch.manual_seed(0)
    return build_family("stargan", spec, {**get_family("stargan").tiny, **overrides})


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# -- classification terms --------------------------------------------------------------------------


def test_attribute_loss_sums_bce_over_known_attributes_and_averages_rows():
    logits = t([0.0, math.log(3)], [-math.log(3), 0.0])
    attributes = t([1, 0], [1, 1])
    known = t([1, 1], [0, 1])
    # BCE(l, y) = softplus(l) - y l. Row 0: (0, 1) -> ln 2; (ln 3, 0) -> ln(1 + 3) = 2 ln 2.
    # Row 1: (-ln 3, 1) -> ln(4/3) + ln 3 = 2 ln 2, unknown; (0, 1) -> ln 2. Known sum 4 ln 2, over 2 rows: 2 ln 2
    assert masked_attribute_loss(logits, attributes, known).item() == pytest.approx(2 * LN2)
    # every attribute known: 6 ln 2 over 2 rows
    assert masked_attribute_loss(logits, attributes, torch.ones(2, 2)).item() == pytest.approx(3 * LN2)


def test_domain_loss_is_cross_entropy_over_domains():
    # softmax(0, 0, ln 2) = (1/4, 1/4, 1/2): domain 2 -> ln 2; softmax(ln 3, 0, 0) = (3/5, 1/5, 1/5): domain 1 -> ln 5
    logits = t([0.0, 0.0, LN2], [math.log(3), 0.0, 0.0])
    loss = domain_classification_loss(logits, torch.tensor([2, 1]))
    assert loss.item() == pytest.approx((LN2 + math.log(5)) / 2)


# -- the mask vector -------------------------------------------------------------------------------


def test_mask_vector_labels_of_a_two_dataset_batch():
    # row 0 from dataset 1 (attributes 0-2 defined), row 1 from dataset 2 (attributes 3-4); the undefined entries
    # hold junk that must be zeroed
    attributes = t([1, 0, 1, 1, 0], [1, 1, 0, 0, 1])
    mask = t([1, 1, 1, 0, 0], [0, 0, 0, 1, 1])
    labels = assemble_labels(attributes, mask, (3, 2))
    expected = t([1, 0, 1, 0, 0, 1, 0],   # set 1's labels, set 2 zeroed, m = (1, 0)
                 [0, 0, 0, 0, 1, 0, 1])   # set 1 zeroed, set 2's labels, m = (0, 1)
    torch.testing.assert_close(labels, expected, rtol=0, atol=0)
    assert dataset_of_rows(mask, (3, 2)).tolist() == [0, 1]


def test_one_label_set_has_no_mask_vector():
    attributes = t([1, 0, 1], [0, 1, 1])
    assert assemble_labels(attributes, torch.ones(2, 3), ()) is attributes
    assert assemble_labels(attributes, torch.ones(2, 3), (3,)) is attributes
    assert dataset_of_rows(torch.ones(2, 3), ()).tolist() == [0, 0]
    with pytest.raises(ValueError, match="add up"):
        assemble_labels(attributes, torch.ones(2, 3), (2, 2))


# -- the reconstruction term -----------------------------------------------------------------------


class AffineGenerator(nn.Module):
    """G(x, c) = 2x + c_0: the output depends on the label, so the order of the two passes shows."""

    def forward(self, images, labels):
        return 2 * images + labels[:, :1, None, None]


def test_reconstruction_term_translates_back_with_the_source_labels():
    generator = AffineGenerator()
    images = torch.tensor([0.5, -0.25]).view(1, 1, 1, 2)
    target, source = t([0.25, 0.0]), t([-1.0, 0.0])
    # G(x, c) = (1.25, -0.25); G(., c') = (1.5, -1.5); minus x: (1.0, -1.25): mean |.| = 1.125
    loss = reconstruction_loss(generator, generator(images, target), source, images)
    assert loss.item() == pytest.approx(1.125)


# -- the phases with stub networks -----------------------------------------------------------------


class HalfGenerator(nn.Module):
    """G(x, c) = x / 2, remembering each label input."""

    def __init__(self):
        super().__init__()
        self.labels = []

    def forward(self, images, labels):
        self.labels.append(labels.detach().clone())
        return images / 2


class SumCritic(nn.Module):
    """D_src(x) = 0.5 * sum(x) (gradient 0.5 per pixel: norm 2 on 1 x 4 x 4 images), D_cls = zero logits."""

    def __init__(self, num_labels):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.num_labels = num_labels

    def forward(self, images):
        scores = self.scale * images.sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        return scores, torch.zeros(images.size(0), self.num_labels) + 0 * self.scale


def stub_images():
    """Two 1 x 4 x 4 images, all 0.5 (sum 8) and all -0.25 (sum -4)."""
    return torch.stack([torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), -0.25)])


def test_critic_loss_is_wasserstein_plus_gradient_penalty_plus_classification():
    family = tiny(DataSpec(channels=1, image_size=4, num_domains=2))
    nets = {"G": HalfGenerator(), "D": SumCritic(2)}
    batch = ImageBatch(stub_images(), domains=torch.tensor([0, 1]))
    loss, logs = family.discriminator_loss(batch, nets)
    # real scores (4, -2), mean 1; fakes x / 2 score (2, -1), mean 0.5: E[D(fake)] - E[D(real)] = -0.5.
    # the critic is linear, so the gradient norm is 0.5 * sqrt(16) = 2 at every interpolate: GP (2 - 1)^2 = 1.
    # zero logits over 2 domains: cross-entropy ln 2
    assert logs["d_adv"] == pytest.approx(-0.5) and logs["wasserstein"] == pytest.approx(0.5)
    assert logs["gp"] == pytest.approx(1.0)
    assert logs["d_cls"] == pytest.approx(LN2)
    assert loss.item() == pytest.approx(-0.5 + 10 * 1.0 + LN2)
    (labels,) = nets["G"].labels  # the fakes were made for one-hot targets permuting the batch's domains
    assert sorted(labels.argmax(dim=1).tolist()) == [0, 1] and labels.sum(dim=1).tolist() == [1, 1]


def test_generator_loss_is_adversarial_plus_classification_plus_ten_times_reconstruction():
    family = tiny(DataSpec(channels=1, image_size=4, num_domains=2))
    nets = {"G": HalfGenerator(), "D": SumCritic(2)}
    batch = ImageBatch(stub_images(), domains=torch.tensor([0, 1]))
    loss, logs = family.generator_loss(batch, nets)
    # fakes score (2, -1): -E = -0.5; zero logits: ln 2; G(G(x)) = x / 4, |x / 4 - x| = 0.75 |x|: (0.375, 0.1875),
    # mean 0.28125
    assert logs["g_adv"] == pytest.approx(-0.5)
    assert logs["g_cls"] == pytest.approx(LN2)
    assert logs["g_rec"] == pytest.approx(0.28125)
    assert loss.item() == pytest.approx(-0.5 + LN2 + 10 * 0.28125)
    _, source = nets["G"].labels  # first pass to the targets, second back to the images' own labels
    torch.testing.assert_close(source, t([1, 0], [0, 1]))


def test_mixed_dataset_phase_classifies_known_attributes_and_feeds_mask_vectors():
    family = tiny(DataSpec(channels=1, image_size=4, num_attributes=3, label_sets=(2, 1)))
    nets = {"G": HalfGenerator(), "D": SumCritic(3)}
    attributes = t([1, 0, 1], [0, 0, 1], [0, 1, 0], [1, 1, 0])  # rows 0, 2: dataset 1; rows 1, 3: dataset 2
    mask = t([1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 1])
    images = torch.cat([stub_images(), stub_images()])
    _, logs = family.discriminator_loss(ImageBatch(images, attributes=attributes, attribute_mask=mask), nets)
    # zero logits: ln 2 per known attribute, 2 + 1 + 2 + 1 of them over 4 rows
    assert logs["d_cls"] == pytest.approx(6 * LN2 / 4)
    (target,) = nets["G"].labels
    own = t([1, 0, 0, 1, 0], [0, 0, 1, 0, 1], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1])  # zeroed other set, then m
    # each row's target is the label vector of a row of its own dataset
    for row in range(4):
        same_dataset = [r for r in range(4) if r % 2 == row % 2]
        assert any(torch.equal(target[row], own[r]) for r in same_dataset), (row, target[row])
    assert torch.equal(target[:, 3:], own[:, 3:])  # the mask vector is the row's own


# -- target labels ---------------------------------------------------------------------------------


def test_target_rows_permute_within_each_group():
    groups = torch.tensor([0, 1, 0, 1, 1, 0, 2])
    moved = False
    for seed in range(20):
        torch.manual_seed(seed)
        rows = target_rows(groups)
        assert sorted(rows.tolist()) == list(range(7))
        assert torch.equal(groups[rows], groups)
        moved |= not torch.equal(rows, torch.arange(7))
    assert moved


def test_training_targets_are_a_permutation_of_the_batch_labels():
    family = tiny(ATTRIBUTES)
    torch.manual_seed(3)
    attributes = torch.randint(2, (8, 5)).float()
    labels = family.training_labels(ImageBatch(torch.zeros(8, 3, 16, 16), attributes=attributes,
                                               attribute_mask=torch.ones(8, 5)))
    assert sorted(map(tuple, labels.target.tolist())) == sorted(map(tuple, attributes.tolist()))
    torch.testing.assert_close(labels.source, attributes)
    domains = tiny(DOMAINS).training_labels(ImageBatch(torch.zeros(6, 3, 16, 16), domains=torch.arange(6) % 3))
    assert sorted(domains.target_classes.tolist()) == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(domains.target, nn.functional.one_hot(domains.target_classes, 3).float())


# -- label modes -----------------------------------------------------------------------------------


def test_label_mode_follows_the_data_unless_configured():
    assert tiny(ATTRIBUTES).mode == "attributes" and tiny(ATTRIBUTES).conditions_on_attributes
    assert tiny(DOMAINS).mode == "domains" and not tiny(DOMAINS).conditions_on_attributes
    forced = tiny(ATTRIBUTES, labels="domains")
    assert forced.mode == "domains" and forced.label_dim == 3
    assert tiny(ATTRIBUTES).label_dim == 5 and tiny(TWO_SETS).label_dim == 7
    with pytest.raises(ConfigError, match="attributes"):
        tiny(DOMAINS, labels="attributes")
    with pytest.raises(ConfigError, match="2 domains"):
        tiny(DataSpec(channels=3, image_size=16, num_attributes=5), labels="domains")
    with pytest.raises(ConfigError, match="multiple of 4"):
        tiny(DataSpec(channels=3, image_size=18, num_domains=3))


def test_generate_reads_the_dataset_of_each_row_from_its_source():
    family = tiny(DataSpec(channels=3, image_size=16, num_attributes=3, label_sets=(2, 1)))
    condition = DomainCondition(torch.zeros(2, 3, 16, 16), source=t([1, 0, 0], [0, 0, 1]), target=t([0, 1, 1], [1, 1, 0]))
    # row 0 is of set 1 (its source has a 1 there): set 2 zeroed, m = (1, 0); row 1 of set 2: set 1 zeroed, m = (0, 1)
    torch.testing.assert_close(family.condition_labels(condition), t([0, 1, 0, 1, 0], [0, 0, 0, 0, 1]))
    domains = tiny(DOMAINS)
    labels = domains.condition_labels(DomainCondition(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]),
                                                      torch.tensor([2, 0])))
    torch.testing.assert_close(labels, t([0, 0, 1], [1, 0, 0]))


def test_a_target_mask_names_the_targets_dataset_instead_of_the_source():
    family = tiny(DataSpec(channels=3, image_size=16, num_attributes=3, label_sets=(2, 1)))
    # row 0: a set-1 image asked for set 2's attribute (the mask says so); row 1: the mask picks set 1
    condition = DomainCondition(torch.zeros(2, 3, 16, 16), source=t([1, 0, 0], [0, 0, 1]), target=t([0, 1, 1], [1, 1, 0]),
                                target_mask=t([0, 0, 1], [1, 1, 0]))
    torch.testing.assert_close(family.condition_labels(condition), t([0, 0, 1, 0, 1], [1, 1, 0, 1, 0]))
    assert condition[1:].target_mask.tolist() == [[1.0, 1.0, 0.0]]


def test_held_out_conditions_carry_the_partner_rows_mask(tmp_path):
    from components.data import write_prepared, load_prepared
    from components.data.sources import RawImages
    from components.evaluation.domains import held_out_conditions

    raw = RawImages(np.zeros((6, 3, 8, 8), np.uint8), None, [], "two-sets", train_count=2,
                    attributes=np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]], np.uint8),
                    attribute_mask=np.array([[1, 1, 0], [0, 0, 1]] * 3, np.uint8), attribute_names=["a", "b", "c"],
                    label_sets=[2, 1])
    write_prepared(raw, tmp_path / "p")
    prepared = load_prepared(tmp_path / "p")
    (batch,) = held_out_conditions(prepared, 10, attributes=True)
    partners = np.roll(batch.rows, 1)
    np.testing.assert_array_equal(batch.condition.target_mask.numpy(), prepared.attribute_mask[partners])


def test_generate_needs_a_condition_per_output():
    family = tiny(DOMAINS)
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(2)
    with pytest.raises(DataError, match="3 source images for 2"):
        family.generate(2, DomainCondition(torch.zeros(3, 3, 16, 16), torch.zeros(3).long(), torch.zeros(3).long()))


# -- networks --------------------------------------------------------------------------------------


def test_generator_sees_the_labels_as_constant_planes():
    family = tiny(ATTRIBUTES)
    generator = family.nets["G"]
    assert generator.net[0].in_channels == 3 + 5
    torch.manual_seed(1)
    images, labels = torch.rand(2, 3, 16, 16) * 2 - 1, t([1, 0, 1, 0, 0], [0, 1, 1, 1, 0])
    planes = labels.view(2, 5, 1, 1).expand(2, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(generator(images, labels), generator.translate(torch.cat([images, planes], 1)))
        assert not torch.allclose(generator(images, labels), generator(images, 1 - labels))


@pytest.mark.parametrize("size, final", [(16, 1), (32, 2), (64, 4)])
def test_networks_have_the_right_shapes_at_each_size(size, final):
    family = build_family("stargan", DataSpec(channels=3, image_size=size, num_attributes=5, label_sets=(3, 2)),
                          {"g_width": 4, "residual_blocks": 1, "d_width": 4})
    images = torch.rand(3, 3, size, size) * 2 - 1
    outputs = family.nets["G"](images, torch.rand(3, 7))
    assert outputs.shape == (3, 3, size, size) and outputs.min() >= -1 and outputs.max() <= 1
    discriminator = family.nets["D"]
    scores, logits = discriminator(outputs)
    assert discriminator.final_size == final  # four stride-2 layers
    assert scores.shape == (3, 1, final, final)  # D_src: a score per patch of the final map
    assert logits.shape == (3, 5)  # D_cls: a logit per attribute of both sets (not the mask vector)
    assert discriminator.class_head.kernel_size == (final, final)  # its kernel covers the final map


def test_discriminator_has_no_normalisation_and_leaky_relu_0_01():
    discriminator = build_family("stargan", DataSpec(channels=3, image_size=32, num_domains=3)).nets["D"]
    kinds = {type(m) for m in discriminator.modules()}
    assert not kinds & {nn.BatchNorm2d, nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm}
    assert {m.negative_slope for m in discriminator.modules() if isinstance(m, nn.LeakyReLU)} == {0.01}
    assert discriminator.class_head.out_channels == 3 and discriminator.source_head.out_channels == 1


# -- the export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [DOMAINS, ATTRIBUTES, TWO_SETS], ids=["domains", "attributes", "two_sets"])
def test_export_matches_generate(spec):
    family = tiny(spec)
    family.nets.eval()
    exported = family.export_generator().eval()
    assert exported.condition_shape == (3 + family.label_dim, 16, 16)
    torch.manual_seed(2)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    if family.mode == "domains":
        condition = DomainCondition(images, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2]))
    else:
        source = t([1, 0, 1, 0, 0], [0, 0, 0, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1])
        condition = DomainCondition(images, source, t([0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]))
    with torch.no_grad():
        torch.testing.assert_close(exported(exported.inputs(images, family.condition_labels(condition))),
                                   family.generate(4, condition), rtol=0, atol=0)


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny(TWO_SETS)
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        assert inputs.shape == (n, 3 + 7, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=0)


def test_export_examples_are_valid_label_vectors():
    exported = tiny(TWO_SETS).export_generator()
    planes = exported.example_inputs(4)[:, 3:]
    labels = planes[:, :, 0, 0]
    assert torch.equal(planes, labels[:, :, None, None].expand_as(planes))  # constant planes
    assert labels[:, 5:].tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]  # one-hot mask vector
    assert labels[0::2, 3:5].abs().sum() == 0 and labels[1::2, :3].abs().sum() == 0  # other set zeroed
    domains = tiny(DOMAINS).export_generator().example_inputs(3)[:, 3:, 0, 0]
    torch.testing.assert_close(domains, torch.eye(3))
