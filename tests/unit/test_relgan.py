"""RelGAN: relative-attribute triplets, the interpolation target, L_Ortho, the losses by hand, shapes, export."""

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families import relgan
from components.families.relgan import (RelativeDiscriminator, RelativeGenerator, cycle_reconstruction_loss,
                                        interpolation_discriminator_loss, interpolation_generator_loss,
                                        interpolation_target, match_discriminator_loss, orthogonal_regularizer,
                                        relative_triplets, relgan_discriminator_adversarial,
                                        relgan_generator_adversarial, sample_relative_triplets,
                                        self_reconstruction_loss)

SPEC = DataSpec(channels=3, image_size=16, num_domains=3, num_attributes=3)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("relgan", spec, {**get_family("relgan").tiny, **overrides})


# -- relative-attribute triplets -------------------------------------------------------------------

ATTRIBUTES = t([1, 0, 0], [0, 1, 1], [1, 0, 1])
PARTNERS = torch.tensor([1, 2, 0])  # x'_0 = x_1, x'_1 = x_2, x'_2 = x_0
OTHERS = torch.tensor([1, 0, 2])  # the rows the wrong vectors come from
FLIPS = torch.tensor([0, 1, 2])  # the attribute flipped where the other row's attributes collide


def test_real_triplets_carry_the_partners_attributes_minus_the_rows():
    triplets = relative_triplets(ATTRIBUTES, PARTNERS, OTHERS, FLIPS)
    # a' = a[partners] = (0 1 1), (1 0 1), (1 0 0); v = a' - a
    torch.testing.assert_close(triplets.relative, t([-1, 1, 1], [1, -1, 0], [0, 0, -1]))
    assert torch.equal(triplets.partners, PARTNERS)


def test_wrong_triplets_replace_the_target_or_the_source_and_never_match():
    triplets = relative_triplets(ATTRIBUTES, PARTNERS, OTHERS, FLIPS)
    # wrong target: row 0's other row (1) has a' itself, (0 1 1), so a' flips attribute 0: (1 1 1) - (1 0 0);
    # row 1: a_0 = (1 0 0) - (0 1 1); row 2: a_2 = (1 0 1) - (1 0 1)
    torch.testing.assert_close(triplets.wrong_target, t([0, 1, 1], [1, -1, -1], [0, 0, 0]))
    # wrong source: row 0: (0 1 1) - a_1 = (0 1 1); row 1: (1 0 1) - a_0 = (1 0 0); row 2's other row is
    # itself, so a_2 flips attribute 2: (1 0 0) - (1 0 0)
    torch.testing.assert_close(triplets.wrong_source, t([0, 0, 0], [0, 0, 1], [0, 0, 0]))
    for wrong in (triplets.wrong_target, triplets.wrong_source):
        assert (wrong != triplets.relative).any(dim=1).all()


def test_sampled_triplets_hold_on_random_batches():
    torch.manual_seed(0)
    for _ in range(20):
        attributes = torch.randint(2, (8, 5)).float()
        triplets = sample_relative_triplets(attributes)
        assert sorted(triplets.partners.tolist()) == list(range(8))  # a permutation of the batch
        torch.testing.assert_close(triplets.relative, attributes[triplets.partners] - attributes)
        assert set(triplets.relative.unique().tolist()) <= {-1.0, 0.0, 1.0}
        for wrong in (triplets.wrong_target, triplets.wrong_source):
            assert (wrong != triplets.relative).any(dim=1).all()


def test_attributes_a_dataset_does_not_define_ask_for_no_change():
    # two label sets: rows 0, 1 define attributes 0-1, row 2 defines attribute 2 only
    known = t([1, 1, 0], [1, 1, 0], [0, 0, 1])
    attributes = t([1, 0, 0], [0, 1, 0], [0, 0, 1])
    triplets = relative_triplets(attributes, torch.tensor([1, 0, 0]), torch.tensor([0, 0, 1]),
                                 torch.tensor([1, 0, 2]), known)
    # row 0 -> row 1: both define 0-1: (-1, 1, 0); row 1 -> row 0: (1, -1, 0); row 2 -> row 0: nothing in common
    torch.testing.assert_close(triplets.relative, t([-1, 1, 0], [1, -1, 0], [0, 0, 0]))
    # wrong target: row 0's other row is itself, (1 0 0), unlike a' = (0 1 0): (1 0 0) - a_0 = 0; row 1's,
    # row 0, has a' = (1 0 0) itself, so a' flips attribute 0: (0 0 0) - a_1
    torch.testing.assert_close(triplets.wrong_target[:2], t([0, 0, 0], [0, -1, 0]))
    # wrong source: row 0's other row is itself, so a_0 flips attribute 1: a' - (1 1 0) = (-1 0 0); row 1: a' - a_0
    torch.testing.assert_close(triplets.wrong_source[:2], t([-1, 0, 0], [0, 0, 0]))
    assert (triplets.wrong_target[:2] != triplets.relative[:2]).any(dim=1).all()
    assert (triplets.wrong_source[:2] != triplets.relative[:2]).any(dim=1).all()


# -- the interpolation discriminator ---------------------------------------------------------------


def test_interpolation_target_is_the_distance_to_the_nearest_end():
    alpha = t(0.0, 0.25, 0.5, 0.8, 1.0)
    torch.testing.assert_close(interpolation_target(alpha), t(0.0, 0.25, 0.5, 0.2, 0.0))


def test_interpolation_losses_hand_values():
    # alpha (0.25, 0.8) -> targets (0.25, 0.2); scores (0.1, 0.4): squared errors 0.0225, 0.04, mean 0.03125;
    # end points scored (0.2, -0.1) against 0: 0.04, 0.01, mean 0.025
    loss = interpolation_discriminator_loss(t(0.1, 0.4), t(0.2, -0.1), t(0.25, 0.8))
    assert loss.item() == pytest.approx(0.05625)
    assert interpolation_generator_loss(t(0.1, 0.4)).item() == pytest.approx((0.01 + 0.16) / 2)


# -- the orthogonal regulariser --------------------------------------------------------------------


def test_orthogonal_regulariser_on_two_by_two_weights():
    assert orthogonal_regularizer([torch.eye(2)]).item() == 0.0
    # W^T W = diag(4, 1); minus I: diag(3, 0); squared Frobenius norm (4 - 1)^2 = 9
    assert orthogonal_regularizer([t([2, 0], [0, 1])]).item() == pytest.approx(9.0)
    assert orthogonal_regularizer([torch.eye(2), t([2, 0], [0, 1])]).item() == pytest.approx(9.0)


def test_orthogonal_regulariser_reads_kernels_as_out_by_in_k_k_and_takes_the_small_gram():
    # a 1-output kernel over 2 inputs, (1, 1): the 1 x 1 Gram W W^T = 1 + 1 = 2: (2 - 1)^2 = 1;
    # 2 outputs of 1 input: the 1 x 1 Gram W^T W = 2 as well
    assert orthogonal_regularizer([torch.ones(1, 2, 1, 1)]).item() == pytest.approx(1.0)
    assert orthogonal_regularizer([torch.ones(2, 1, 1, 1)]).item() == pytest.approx(1.0)
    # a 3 x 3 kernel of 1 input, 1 output, all 1/3: the row has norm^2 9 / 9 = 1, so it is orthonormal
    assert orthogonal_regularizer([torch.full((1, 1, 3, 3), 1 / 3)]).item() == pytest.approx(0.0, abs=1e-6)


def test_the_small_gram_differs_from_the_large_one_by_the_size_difference():
    torch.manual_seed(0)
    w = torch.randn(2, 3, dtype=torch.float64)
    large = (w.t() @ w - torch.eye(3, dtype=torch.float64)).pow(2).sum()
    assert (large - orthogonal_regularizer([w])).item() == pytest.approx(1.0)


def test_orthogonal_regulariser_covers_every_conv_of_the_generator():
    generator = RelativeGenerator(3, 2, width=4, res_blocks=1, edge_kernel=3)
    weights = generator.conv_weights()
    # conv in, two downsampling, two in the residual block, two transposed, conv out
    assert len(weights) == 8 and all(w.dim() == 4 for w in weights)


# -- LSGAN terms and reconstructions ---------------------------------------------------------------


def test_lsgan_terms_hand_values():
    # real scores (1, 0): (0 + 1) / 2; fake (0, 1): (0 + 1) / 2; the paper's sums are not halved
    assert relgan_discriminator_adversarial(t(1.0, 0.0), t(0.0, 1.0)).item() == pytest.approx(1.0)
    assert relgan_generator_adversarial(t(0.5, 1.0)).item() == pytest.approx(0.125)
    # match: real 1 -> 0; fake 0.5 -> 0.25; wrong (0.5, -1) -> (0.25 + 1) / 2
    assert match_discriminator_loss(t(1.0), t(0.5), t(0.5, -1.0)).item() == pytest.approx(0.875)


def test_reconstruction_terms_hand_values():
    images = t(0.5, -0.5, 1.0, 0.0).view(1, 1, 2, 2)
    # |differences| (0.5, 0.25, 0, 0.25): mean 0.25
    back = t(0.0, -0.25, 1.0, 0.25).view(1, 1, 2, 2)
    assert cycle_reconstruction_loss(back, images).item() == pytest.approx(0.25)
    assert self_reconstruction_loss(back, images).item() == pytest.approx(0.25)


# -- what the phases feed D, with stub networks ----------------------------------------------------

WEIGHTS = t(1.0, 0.1, 0.01)  # the stub G's shift: v . w, distinct for each v of the batch below


class AffineGenerator(nn.Module):
    """G(x, v) = x / 2 + v . w everywhere; one 2 x 2 "kernel" [[2, 0], [0, 1]] for L_Ortho (value 9)."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(t([2.0, 0.0], [0.0, 1.0]))

    def forward(self, images, relative):
        return images / 2 + (relative @ WEIGHTS).view(-1, 1, 1, 1) + 0 * self.kernel.sum()

    def conv_weights(self):
        return [self.kernel]


class RecordingDiscriminator(nn.Module):
    """Remembers its inputs and scores everything 0 (2 x 2 patches for D_Real and D_Match)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, images, pairs, relative):
        self.seen.append((images.detach().clone(), pairs.clone(), relative.clone()))
        zeros = self.scale * images.new_zeros(images.size(0), 1, 2, 2)
        return zeros, zeros.mean(dim=(1, 2, 3)), self.scale * images.new_zeros(pairs.size(0), 1, 2, 2)


IMAGES = t(0.4, -0.2, 0.0).view(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()  # constant planes
V = t([-1, 1, 1], [1, -1, 0], [0, 0, -1])  # ATTRIBUTES[PARTNERS] - ATTRIBUTES; v . w = -0.89, 0.9, -0.01


@pytest.fixture
def fixed_triplets(monkeypatch):
    monkeypatch.setattr(relgan, "sample_relative_triplets",
                        lambda attributes, known=None: relative_triplets(attributes, PARTNERS, OTHERS, FLIPS, known))


def stub_family():
    return tiny(DataSpec(channels=1, image_size=8, num_attributes=3)), AffineGenerator(), RecordingDiscriminator()


def test_discriminator_phase_scores_real_fake_and_wrong_triplets_and_the_interpolations(fixed_triplets):
    family, generator, discriminator = stub_family()
    batch = ImageBatch(IMAGES, attributes=ATTRIBUTES, attribute_mask=torch.ones(3, 3))
    torch.manual_seed(5)
    loss, logs = family.discriminator_loss(batch, {"G": generator, "D": discriminator})
    torch.manual_seed(5)
    alpha = torch.rand(3)  # the phase's draw (the patched triplets draw nothing)
    near_start = alpha < 0.5
    (images, pairs, relative), = discriminator.seen
    with torch.no_grad():
        expected = torch.cat([IMAGES, generator(IMAGES, V), generator(IMAGES, alpha[:, None] * V),
                              generator(IMAGES[near_start], torch.zeros(int(near_start.sum()), 3))])
    torch.testing.assert_close(images, expected)
    # real (x, v, x'), fake (x, v, G(x, v)) at rows 3-5, then the two wrong kinds on (x, x')
    rows = torch.arange(3)
    real, fake = torch.stack([rows, PARTNERS], 1), torch.stack([rows, rows + 3], 1)
    assert torch.equal(pairs, torch.cat([real, fake, real, real]))
    triplets = relative_triplets(ATTRIBUTES, PARTNERS, OTHERS, FLIPS)
    torch.testing.assert_close(relative, torch.cat([V, V, triplets.wrong_target, triplets.wrong_source]))
    # all scores 0: L_Real = (0 - 1)^2 + 0 = 1, L_Match = 1 + 0 + 0, L_Interp = mean(alpha_hat^2) + 0
    interp = interpolation_target(alpha).pow(2).mean().item()
    assert logs["d_real"] == pytest.approx(1.0) and logs["d_match"] == pytest.approx(1.0)
    assert logs["d_interp"] == pytest.approx(interp)
    assert loss.item() == pytest.approx(2.0 + family.config.lambda_interp * interp)


def test_generator_phase_hand_values_with_a_stub_generator(fixed_triplets):
    family, generator, discriminator = stub_family()
    batch = ImageBatch(IMAGES, attributes=ATTRIBUTES)
    loss, logs = family.generator_loss(batch, {"G": generator, "D": discriminator})
    # self: G(x, 0) = x / 2: mean |x| / 2 = (0.4 + 0.2 + 0) / 6 = 0.1
    assert logs["g_self"] == pytest.approx(0.1)
    # cycle: G(G(x, v), -v) = x / 4 - (v . w) / 2, minus x: |-0.75 x - (v . w) / 2| per row =
    # |-0.3 + 0.445|, |0.15 - 0.45|, |0 + 0.005| = 0.145, 0.3, 0.005: mean 0.15
    assert logs["g_cycle"] == pytest.approx(0.15)
    assert logs["g_ortho"] == pytest.approx(9.0)
    # D scores 0: L_Real^G = L_Match^G = (0 - 1)^2 = 1, L_Interp^G = 0
    assert logs["g_real"] == pytest.approx(1.0) and logs["g_match"] == pytest.approx(1.0)
    assert logs["g_interp"] == 0.0
    cfg = family.config
    assert loss.item() == pytest.approx(2.0 + cfg.lambda_cycle * 0.15 + cfg.lambda_self * 0.1 + cfg.lambda_ortho * 9)
    (images, pairs, relative), = discriminator.seen
    torch.testing.assert_close(images[3:6], generator(IMAGES, V).detach())  # the fake triplets' outputs
    assert torch.equal(pairs, torch.stack([torch.arange(3), torch.arange(3, 6)], 1))
    torch.testing.assert_close(relative, V)


# -- networks, generate, spec checks ---------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
def test_network_shapes(size):
    cfg = get_family("relgan").Config()
    torch.manual_seed(0)
    generator = RelativeGenerator(3, 5, cfg.g_width, cfg.g_res_blocks, cfg.g_edge_kernel)
    discriminator = RelativeDiscriminator(3, 5, size, cfg.d_width, cfg.d_max_width, cfg.match_hidden,
                                          cfg.interp_channels)
    images = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        outputs = generator(images, t([1, 0, -1, 0, 0], [0, 0, 0, 1, -1]))
        real, interp, match = discriminator(torch.cat([images, outputs]), torch.tensor([[0, 2], [1, 3], [0, 1]]),
                                            torch.zeros(3, 5))
    assert outputs.shape == images.shape and outputs.abs().max() <= 1
    assert real.shape == (4, 1, 2, 2) and interp.shape == (4,) and match.shape == (3, 1, 2, 2)


def test_generate_applies_target_minus_source_and_interpolate_scales_it():
    family = tiny()
    family.nets.eval()
    torch.manual_seed(1)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    source, target = t([1, 0, 1], [0, 1, 0]), t([0, 0, 1], [1, 1, 0])
    with torch.no_grad():
        expected = family.nets["G"](images, target - source)
        half = family.nets["G"](images, 0.5 * (target - source))
        rows = family.nets["G"](images, t([0], [0.25]) * (target - source))
    torch.testing.assert_close(family.generate(2, DomainCondition(images, source, target)), expected)
    torch.testing.assert_close(family.interpolate(images, target - source, 0.5), half)
    torch.testing.assert_close(family.interpolate(images, target - source, t(0.0, 0.25)), rows)
    assert family.conditions_on_attributes


def test_generate_refuses_domain_indices_and_a_wrong_count():
    family = tiny()
    images = torch.zeros(2, 3, 16, 16)
    with pytest.raises(DataError, match="attribute vectors"):
        family.generate(2, DomainCondition(images, torch.tensor([0, 1]), torch.tensor([1, 2])))
    with pytest.raises(DataError, match="2 source images for 3"):
        family.generate(3, DomainCondition(images, torch.zeros(2, 3), torch.ones(2, 3)))


def test_data_without_attributes_is_refused():
    with pytest.raises(ConfigError, match="attributes"):
        build_family("relgan", DataSpec(channels=3, image_size=16, num_domains=3))
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_family("relgan", DataSpec(channels=3, image_size=18, num_attributes=3))
    with pytest.raises(ConfigError, match="odd"):
        build_family("relgan", SPEC, {"g_edge_kernel": 4})


# -- the export ------------------------------------------------------------------------------------


def test_export_takes_image_and_relative_planes():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    assert exported.condition_shape == (6, 16, 16) and exported.condition_kind == "image_and_relative_attributes"
    inputs = exported.example_inputs(4)
    relative = inputs[:, 3:, 0, 0]
    assert set(relative.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(inputs[:, 3:], relative[:, :, None, None].expand(-1, -1, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(exported(inputs), family.nets["G"](inputs[:, :3], relative), rtol=0, atol=0)


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=0)
