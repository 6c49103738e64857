"""DiscoGAN: its losses against hand values, what the phases feed G and D, the skip-free encoder-decoders,
frozen batch statistics, generate's dispatch and the export."""

import copy
import math

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.discogan import (DiscoGANExport, EncoderDecoder, discogan_discriminator_loss,
                                          discogan_generator_loss, discogan_reconstruction_loss, encoder_depth,
                                          running_stats_frozen)
from components.training.loop import run_phase

LN2, LN3 = math.log(2), math.log(3)
SPEC = DataSpec(channels=3, image_size=16, num_domains=2)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def square(*values):
    """Four values as a 1 x 1 x 2 x 2 image, row by row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("discogan", spec, {**get_family("discogan").tiny, **overrides})


def unpaired_batch(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageBatch(torch.rand(n, 3, size, size, generator=g) * 2 - 1, domains=torch.arange(n) % 2)


# -- pure losses ----------------------------------------------------------------------------------

RECONSTRUCTED = square(0.5, -0.5, 1.0, 0.0)
ORIGINAL = square(0.0, -0.25, 1.0, 0.25)  # differences 0.5, -0.25, 0, -0.25: squares 0.25, 0.0625, 0, 0.0625


def test_reconstruction_is_the_mean_squared_error():
    # (0.25 + 0.0625 + 0 + 0.0625) / 4 = 0.09375
    assert discogan_reconstruction_loss(RECONSTRUCTED, ORIGINAL).item() == pytest.approx(0.09375)
    assert discogan_reconstruction_loss(ORIGINAL, ORIGINAL).item() == 0


def test_generator_loss_sums_both_gan_terms_and_both_reconstructions():
    # D_B(G_AB(a)) logits (0, ln 3): softplus(-0) = ln 2, softplus(-ln 3) = ln(1 + 1/3) = ln 4/3; mean of the two.
    # D_A(G_BA(b)) logit -ln 3: softplus(ln 3) = ln 4. L_CONST_A 0.09375 (above); L_CONST_B: zeros against ones, 1.
    gan_b, gan_a = (LN2 + math.log(4 / 3)) / 2, math.log(4)
    zeros, ones = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    total, terms = discogan_generator_loss(t(0.0, LN3), t(-LN3), RECONSTRUCTED, ORIGINAL, zeros, ones)
    assert terms["gan_b"].item() == pytest.approx(gan_b)
    assert terms["gan_a"].item() == pytest.approx(gan_a)
    assert terms["const_a"].item() == pytest.approx(0.09375)
    assert terms["const_b"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(gan_b + 0.09375 + gan_a + 1.0)
    weighted, _ = discogan_generator_loss(t(0.0, LN3), t(-LN3), RECONSTRUCTED, ORIGINAL, zeros, ones,
                                          gan_weight=2.0, reconstruction_weight=10.0)
    assert weighted.item() == pytest.approx(2 * (gan_b + gan_a) + 10 * (0.09375 + 1.0))


def test_discriminator_loss_is_the_bce_of_both_domains():
    # A: real 0 -> softplus(-0) = ln 2; fake ln 3 -> softplus(ln 3) = ln 4.
    # B: real ln 3 -> softplus(-ln 3) = ln 4/3; fake -ln 3 -> softplus(-ln 3) = ln 4/3.
    # ln 2 + ln 4 + 2 ln 4/3 = ln(2 * 4 * 16 / 9) = ln 128/9
    loss = discogan_discriminator_loss(t(0.0), t(LN3), t(LN3), t(-LN3))
    assert loss.item() == pytest.approx(LN2 + math.log(4) + 2 * math.log(4 / 3))
    assert loss.item() == pytest.approx(math.log(128 / 9))


# -- what the phases feed G and D -------------------------------------------------------------------


class StubGenerators(nn.Module):
    """G_AB(x) = 2x, G_BA(x) = x / 4: both round trips give x / 2."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter so the loss has a graph

    def forward(self, images_a, images_b):
        return 2 * self.scale * images_a, self.scale * images_b / 4


class RecordingDiscriminators(nn.Module):
    """Remembers each (A, B) input pair and returns zero logits (D = 1/2) for every image."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, images_a, images_b):
        self.seen.append((images_a.detach().clone(), images_b.detach().clone()))
        return self.scale * images_a.flatten(1)[:, 0], self.scale * images_b.flatten(1)[:, 0]


def stub_batch():
    # rows alternate A, B: A = (1, -1, 0.5, 0), (0, 0, 0, 0); B = (0.5, 0.5, -1, 1), (1, 1, 1, 1)
    images = torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.5, 0.5, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                           [1.0, 1.0, 1.0, 1.0]]).view(4, 1, 2, 2)
    return ImageBatch(images, domains=torch.tensor([0, 1, 0, 1]))


def test_generator_phase_reconstructs_both_ways_with_the_l2_distance():
    family = tiny(DataSpec(channels=1, image_size=8, num_domains=2))
    nets = {"G": StubGenerators(), "D": RecordingDiscriminators()}
    batch = stub_batch()
    loss, logs = family.generator_loss(batch, nets)
    # round trips give x / 2, so L_CONST = mean((x / 2)^2) = mean(x^2) / 4 over the domain's pixels:
    # A: squares 1, 1, 0.25, 0 and four zeros, mean 2.25 / 8, / 4 = 0.0703125
    # B: squares 0.25, 0.25, 1, 1 and four ones, mean 6.5 / 8, / 4 = 0.203125
    assert logs["g_const_a"] == pytest.approx(0.0703125)
    assert logs["g_const_b"] == pytest.approx(0.203125)
    assert logs["g_gan_a"] == logs["g_gan_b"] == pytest.approx(LN2)  # zero logits
    assert loss.item() == pytest.approx(2 * LN2 + 0.0703125 + 0.203125)
    (judged,) = nets["D"].seen  # D_A judges G_BA(b), D_B judges G_AB(a)
    a, b = batch.images[0::2], batch.images[1::2]
    torch.testing.assert_close(judged[0], b / 4)
    torch.testing.assert_close(judged[1], 2 * a)


def test_discriminator_phase_sees_real_then_translated_images_of_each_domain():
    family = tiny(DataSpec(channels=1, image_size=8, num_domains=2))
    nets = {"G": StubGenerators(), "D": RecordingDiscriminators()}
    batch = stub_batch()
    loss, logs = family.discriminator_loss(batch, nets)
    (real_a, real_b), (fake_a, fake_b) = nets["D"].seen
    a, b = batch.images[0::2], batch.images[1::2]
    torch.testing.assert_close(real_a, a)
    torch.testing.assert_close(real_b, b)
    torch.testing.assert_close(fake_a, b / 4)
    torch.testing.assert_close(fake_b, 2 * a)
    # zero logits everywhere: (ln 2 + ln 2) per domain
    assert loss.item() == pytest.approx(4 * LN2) and logs["d_real"] == logs["d_fake"] == pytest.approx(0.5)


def test_a_batch_needs_both_domains():
    family = tiny()
    one_sided = ImageBatch(torch.zeros(4, 3, 16, 16), domains=torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="both domains"):
        family.generator_loss(one_sided, family.nets)
    with pytest.raises(DataError, match="no domains"):
        family.discriminator_loss(ImageBatch(torch.zeros(4, 3, 16, 16)), family.nets)


def test_each_phase_leaves_the_other_module_untouched_running_stats_included():
    family = tiny()
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    for phase in family.phases():
        before = {k: copy.deepcopy(m.state_dict()) for k, m in nets.items()}
        run_phase(phase, unpaired_batch(), nets, optimizers)
        for key, module in nets.items():
            after = module.state_dict()
            unchanged = all(torch.equal(before[key][name], value) for name, value in after.items())
            running_changed = any(not torch.equal(before[key][name], value) for name, value in after.items()
                                  if "running" in name)
            assert unchanged == (key not in phase.modules), f"phase {phase.name}: {key}"
            assert running_changed == (key in phase.modules), f"phase {phase.name}: {key} running stats"


def test_frozen_running_stats_still_normalise_with_the_batch():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(2, momentum=0.3)
    norm.running_mean.fill_(0.5)
    inputs = torch.randn(4, 2, 3, 3) * 3 + 1
    with running_stats_frozen(norm):
        frozen = norm(inputs)
    torch.testing.assert_close(norm.running_mean, torch.full((2,), 0.5), rtol=0, atol=0)
    torch.testing.assert_close(norm.running_var, torch.ones(2), rtol=0, atol=0)
    assert norm.num_batches_tracked.item() == 0 and norm.momentum == 0.3
    torch.testing.assert_close(frozen, norm(inputs))  # the same batch statistics as an ordinary training pass
    assert norm.num_batches_tracked.item() == 1 and not torch.equal(norm.running_mean, torch.full((2,), 0.5))


# -- the encoder-decoders ---------------------------------------------------------------------------


def test_generators_have_no_skip_connections():
    torch.manual_seed(0)
    net = EncoderDecoder(3, 32, 4, width=4, max_width=8).eval()
    first, second = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(net(first), net(second))
        cut = net.encoder.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
        outputs_first, outputs_second = net(first), net(second)
        cut.remove()
    # with the bottleneck zeroed the input has no other way to the output
    torch.testing.assert_close(outputs_first, outputs_second, rtol=0, atol=0)


@pytest.mark.parametrize("size, depth", [(16, 2), (32, 3), (64, 4)])
def test_networks_have_the_image_shape_at_each_size(size, depth):
    family = tiny(DataSpec(channels=3, image_size=size, num_domains=2))
    generators, discriminators = family.nets["G"], family.nets["D"]
    bottlenecks = []
    generators.a_to_b.encoder.register_forward_hook(lambda module, args, output: bottlenecks.append(output))
    assert generators.a_to_b.depth == generators.b_to_a.depth == depth == encoder_depth(size, 4)
    a, b = torch.rand(2, 3, 3, size, size) * 2 - 1
    fake_b, fake_a = generators(a, b)
    assert fake_b.shape == fake_a.shape == (3, 3, size, size)
    assert min(fake_a.min(), fake_b.min()) >= -1 and max(fake_a.max(), fake_b.max()) <= 1
    assert bottlenecks[0].shape == (3, 8, 4, 4)  # tiny widths 4, 8, 8, ...: capped at 8, down to 4 x 4
    logits_a, logits_b = discriminators(fake_a, fake_b)
    assert logits_a.shape == logits_b.shape == (3,)


def test_default_networks_at_32_pixels():
    family = build_family("discogan", DataSpec(channels=3, image_size=32, num_domains=2))
    encoder = family.nets["G"].a_to_b.encoder
    assert [m.out_channels for m in encoder if isinstance(m, nn.Conv2d)] == [16, 32, 64]
    outputs = family.nets["G"].a_to_b(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert outputs.shape == (4, 3, 32, 32)
    assert family.nets["D"].a(outputs).shape == (4,)


def test_image_size_must_halve_down_to_the_bottleneck():
    assert encoder_depth(64, 4) == 4 and encoder_depth(32, 2) == 4
    with pytest.raises(ConfigError, match="power of two"):
        build_family("discogan", DataSpec(channels=3, image_size=24, num_domains=2))
    with pytest.raises(ConfigError, match="power of two"):
        encoder_depth(4, 4)


def test_optimizers_are_the_papers_adam_with_the_official_weight_decay():
    optimizers = tiny().build_optimizers()
    assert set(optimizers) == {"G", "D"}
    for optimizer in optimizers.values():
        group = optimizer.param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (2e-4, (0.5, 0.999), 1e-5)


# -- generate and the export ------------------------------------------------------------------------


def test_generate_sends_a_to_b_through_g_ab_and_b_to_a_through_g_ba():
    family = tiny()
    family.nets.eval()
    batch = unpaired_batch(seed=3)
    condition = family.condition_of(batch)
    assert torch.equal(condition.target, 1 - batch.domains)
    outputs = family.generate(6, condition)
    with torch.no_grad():
        to_b = family.nets["G"].a_to_b(batch.images[0::2])
        to_a = family.nets["G"].b_to_a(batch.images[1::2])
    torch.testing.assert_close(outputs[0::2], to_b, rtol=0, atol=0)
    torch.testing.assert_close(outputs[1::2], to_a, rtol=0, atol=0)


def test_generate_needs_one_condition_per_output():
    family = tiny()
    images = torch.zeros(3, 3, 16, 16)
    domains = torch.tensor([0, 1, 0])
    with pytest.raises(DataError, match="3 source images for 4"):
        family.generate(4, DomainCondition(images, domains, 1 - domains))
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(4)


def test_export_mixes_the_two_generators_by_the_target_plane():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    assert isinstance(exported, DiscoGANExport)
    assert exported.condition_shape == (4, 16, 16) and exported.condition_kind == "image_and_target_domain"
    inputs = exported.example_inputs(4)
    images, target = inputs[:, :3], inputs[:, 3]
    assert torch.equal(target, torch.tensor([1.0, 0.0, 1.0, 0.0]).view(4, 1, 1).expand(4, 16, 16))
    condition = DomainCondition(images, 1 - target[:, 0, 0].long(), target[:, 0, 0].long())
    with torch.no_grad():
        torch.testing.assert_close(exported(inputs), family.generate(4, condition))
        half = exported(torch.cat([images, torch.full((4, 1, 16, 16), 0.5)], dim=1))
        generators = family.nets["G"]
        torch.testing.assert_close(half, (generators.a_to_b(images) + generators.b_to_a(images)) / 2)


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny()
    optimizers = family.build_optimizers()
    for phase in family.phases():  # trained a step, so the running statistics are not the initial ones
        run_phase(phase, unpaired_batch(), dict(family.nets.items()), optimizers)
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            expected = exported(inputs)
            torch.testing.assert_close(program.module()(inputs), expected, atol=1e-5, rtol=0)
        assert expected.shape == (n, 3, 16, 16)
