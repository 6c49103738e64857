"""CycleGAN: its losses against hand values, the history buffer, what each phase feeds and changes, the ResNet
generator's shapes, generate's choice of generator and the export."""

import copy

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.cyclegan import (CycleGenerators, ImageHistoryBuffer, cycle_consistency_loss,
                                          cyclegan_adversarial_loss, cyclegan_discriminator_loss,
                                          cyclegan_generator_loss, identity_loss)
from components.nets.resnet import ResidualBlock, ResnetGenerator
from components.training.loop import run_phase

SPEC = DataSpec(channels=3, image_size=16, num_domains=2)


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("cyclegan", spec, {**get_family("cyclegan").tiny, **overrides})


def square(*values):
    """Four values as a 1 x 1 x 2 x 2 image, row by row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


class Shift(nn.Module):
    """x + offset: a stub generator whose translations and round trips are known by hand."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.ones(()))  # a parameter so the loss has a graph

    def forward(self, x):
        return self.weight * x + self.offset


def stub_generators(g_offset=0.5, f_offset=-0.25):
    """G(x) = x + 0.5, F(x) = x - 0.25."""
    generators = CycleGenerators(1, 1, 0)
    generators.g_ab, generators.g_ba = Shift(g_offset), Shift(f_offset)
    return generators


class RecordingDiscriminators(nn.Module):
    """Remembers what D_A and D_B see; scores every image's patches with the constants given (a, b)."""

    def __init__(self, score_a=0.0, score_b=0.0, pool_size=0):
        super().__init__()
        self.score_a, self.score_b = score_a, score_b
        self.scale = nn.Parameter(torch.zeros(()))
        self.seen = []
        self.pool_a = ImageHistoryBuffer(pool_size, 1, 2)
        self.pool_b = ImageHistoryBuffer(pool_size, 1, 2)

    def forward(self, images_a, images_b):
        self.seen.append((images_a.detach().clone(), images_b.detach().clone()))
        patches = lambda x, score: self.scale * x[:, :1, :1, :1] + score  # noqa: E731
        return patches(images_a, self.score_a), patches(images_b, self.score_b)


A = square(0.0, 0.5, -0.5, 1.0)
B = square(0.25, -1.0, 0.0, 0.75)


# -- pure losses ----------------------------------------------------------------------------------


def test_cycle_loss_of_shift_generators():
    # F(G(a)) = a + 0.5 - 0.25 = a + 0.25 and G(F(b)) = b + 0.25: every residual 0.25, so each L1 is 0.25
    assert cycle_consistency_loss(A, A + 0.25, B, B + 0.25).item() == pytest.approx(0.5)
    # one side exact, the other off by (0.5, -0.5, 0, 1): mean |.| = 0.5
    assert cycle_consistency_loss(A, A, B, B + square(0.5, -0.5, 0.0, 1.0)).item() == pytest.approx(0.5)


def test_identity_loss_of_shift_generators():
    # F(a) - a = -0.25 everywhere, G(b) - b = 0.5: 0.25 + 0.5
    assert identity_loss(A, A - 0.25, B, B + 0.5).item() == pytest.approx(0.75)


def test_least_squares_terms():
    # G: mean of (0 - 1)^2, (1 - 1)^2, (3 - 1)^2 = (1 + 0 + 4) / 3, not halved
    assert cyclegan_adversarial_loss(t(0.0, 1.0, 3.0)).item() == pytest.approx(5 / 3)
    # D: real (1, 0) -> (0, 1)^2 mean 0.5; fake (0, 1) -> (0, 1)^2 mean 0.5; halved sum 0.5
    assert cyclegan_discriminator_loss(t(1.0, 0.0), t(0.0, 1.0)).item() == pytest.approx(0.5)
    # real 2 -> (2 - 1)^2 = 1; fake -1 -> 1: (1 + 1) / 2
    assert cyclegan_discriminator_loss(t(2.0), t(-1.0)).item() == pytest.approx(1.0)
    assert cyclegan_discriminator_loss(t(1.0, 1.0), t(0.0, 0.0)).item() == 0.0


def test_generator_objective_of_shift_generators():
    outputs = stub_generators()(A, B)
    torch.testing.assert_close(outputs.fake_b, A + 0.5)
    torch.testing.assert_close(outputs.fake_a, B - 0.25)
    torch.testing.assert_close(outputs.reconstructed_a, A + 0.25)
    torch.testing.assert_close(outputs.reconstructed_b, B + 0.25)
    torch.testing.assert_close(outputs.same_b, B + 0.5)
    torch.testing.assert_close(outputs.same_a, A - 0.25)
    # D_B(G(a)) = (0.5, 1) -> (0.25 + 0) / 2 = 0.125; D_A(F(b)) = (0, 2) -> (1 + 1) / 2 = 1: adversarial 1.125;
    # cycle 0.25 + 0.25 = 0.5, times lambda 10 = 5; identity 0.25 + 0.5 = 0.75, times 0.5 lambda = 3.75
    total, adversarial, cycle, identity = cyclegan_generator_loss(A, B, outputs, t(0.0, 2.0), t(0.5, 1.0), 10.0, 5.0)
    assert (adversarial.item(), cycle.item(), identity.item()) == pytest.approx((1.125, 0.5, 0.75))
    assert total.item() == pytest.approx(1.125 + 5.0 + 3.75)


def test_generator_objective_without_identity():
    outputs = stub_generators()(A, B, identity=False)
    assert outputs.same_a is None and outputs.same_b is None
    total, _, cycle, identity = cyclegan_generator_loss(A, B, outputs, t(1.0), t(1.0), 10.0, 5.0)
    assert identity.item() == 0.0 and cycle.item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(5.0)


# -- the history buffer ---------------------------------------------------------------------------


def constants(*values):
    """One 1 x 2 x 2 image per value, filled with it."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def stored_values(pool):
    return pool.images[: int(pool.count), 0, 0, 0].tolist()


def test_buffer_returns_and_stores_new_images_until_full():
    pool = ImageHistoryBuffer(4, 1, 2)
    torch.testing.assert_close(pool.query(constants(0, 1)), constants(0, 1))
    torch.testing.assert_close(pool.query(constants(2, 3)), constants(2, 3))
    assert int(pool.count) == 4 and stored_values(pool) == [0, 1, 2, 3]


def test_full_buffer_swaps_the_seeded_slots():
    pool = ImageHistoryBuffer(3, 1, 2)
    pool.query(constants(0, 1, 2))
    # seed 0: coins torch.rand(4) = (0.496, 0.768, 0.088, 0.132), slots torch.randint(3, (4,)) = (1, 0, 1, 1).
    # 10: coin < 0.5, swaps slot 1 -> returns 1, pool (0, 10, 2); 11: coin 0.768, returned itself;
    # 12: swaps slot 1 -> returns 10, pool (0, 12, 2); 13: swaps slot 1 -> returns 12, pool (0, 13, 2)
    torch.manual_seed(0)
    torch.testing.assert_close(pool.query(constants(10, 11, 12, 13)), constants(1, 11, 10, 12))
    assert stored_values(pool) == [0, 13, 2]


def test_a_batch_that_fills_the_buffer_swaps_only_after_it_is_full():
    # seed 0 again: images 0, 1, 2 fill the pool (their coins unused); 3's coin 0.132 swaps slot 1 -> returns 1
    pool = ImageHistoryBuffer(3, 1, 2)
    torch.manual_seed(0)
    torch.testing.assert_close(pool.query(constants(0, 1, 2, 3)), constants(0, 1, 2, 1))
    assert stored_values(pool) == [0, 3, 2]


def test_buffer_never_holds_more_than_its_capacity():
    pool = ImageHistoryBuffer(50, 3, 4)
    torch.manual_seed(1)
    for step in range(8):  # 128 fakes through a pool of 50
        fakes = torch.rand(16, 3, 4, 4)
        returned = pool.query(fakes)
        assert returned.shape == fakes.shape
        assert int(pool.count) == min(16 * (step + 1), 50) and pool.images.shape == (50, 3, 4, 4)


def test_buffer_survives_a_state_dict_round_trip():
    pool = ImageHistoryBuffer(5, 1, 2)
    pool.query(constants(0, 1, 2, 3, 4, 5, 6))
    restored = ImageHistoryBuffer(5, 1, 2)
    restored.load_state_dict(copy.deepcopy(pool.state_dict()))
    assert int(restored.count) == 5 and stored_values(restored) == stored_values(pool)
    torch.manual_seed(4)
    expected = pool.query(constants(7, 8, 9))
    torch.manual_seed(4)
    torch.testing.assert_close(restored.query(constants(7, 8, 9)), expected)
    assert stored_values(restored) == stored_values(pool)


def test_buffer_of_capacity_zero_passes_images_through():
    pool = ImageHistoryBuffer(0, 1, 2)
    torch.testing.assert_close(pool.query(constants(1, 2)), constants(1, 2))


# -- what the phases feed and change --------------------------------------------------------------

SPEC_2PX = DataSpec(channels=1, image_size=8, num_domains=2)  # the family only sizes its own nets from it


def stub_batch():
    # rows alternate A, B, as the sampler draws them
    return ImageBatch(torch.cat([A, B]), domains=torch.tensor([0, 1]))


def test_generator_phase_scores_translations_with_the_discriminator_of_their_domain():
    family = tiny(SPEC_2PX)
    nets = {"G": stub_generators(), "D": RecordingDiscriminators(score_a=0.0, score_b=2.0)}
    loss, logs = family.generator_loss(stub_batch(), nets)
    ((seen_a, seen_b),) = nets["D"].seen
    torch.testing.assert_close(seen_a, B - 0.25)  # D_A judges F(b)
    torch.testing.assert_close(seen_b, A + 0.5)  # D_B judges G(a)
    # D_A = 0 -> (0 - 1)^2 = 1; D_B = 2 -> 1: adversarial 2; cycle 0.5 x 10; identity 0.75 x 5
    assert (logs["g_adv"], logs["g_cycle"], logs["g_identity"]) == pytest.approx((2.0, 0.5, 0.75))
    assert loss.item() == pytest.approx(2.0 + 5.0 + 3.75) and logs["g_loss"] == pytest.approx(10.75)


def test_identity_scale_zero_drops_the_identity_term():
    family = tiny(SPEC_2PX, identity_scale=0.0)
    loss, logs = family.generator_loss(stub_batch(), {"G": stub_generators(), "D": RecordingDiscriminators()})
    assert logs["g_identity"] == 0.0 and loss.item() == pytest.approx(2.0 + 5.0)


def test_discriminator_phase_judges_reals_then_pooled_fakes():
    family = tiny(SPEC_2PX)
    nets = {"G": stub_generators(), "D": RecordingDiscriminators(score_a=0.0, score_b=1.0, pool_size=4)}
    loss, logs = family.discriminator_loss(stub_batch(), nets)
    ((seen_a, seen_b),) = nets["D"].seen
    torch.testing.assert_close(seen_a, torch.cat([A, B - 0.25]))  # real a, then F(b) (the pool is filling)
    torch.testing.assert_close(seen_b, torch.cat([B, A + 0.5]))  # real b, then G(a)
    assert stored_values(nets["D"].pool_a) == (B - 0.25)[:, 0, 0, 0].tolist()
    # D_A scores 0: ((0 - 1)^2 + 0^2) / 2 = 0.5; D_B scores 1: (0 + 1) / 2 = 0.5
    assert (logs["d_a"], logs["d_b"]) == pytest.approx((0.5, 0.5)) and loss.item() == pytest.approx(1.0)


def test_a_batch_without_both_domains_is_refused():
    family = tiny()
    batch = ImageBatch(torch.zeros(2, 3, 16, 16), domains=torch.tensor([0, 0]))
    with pytest.raises(DataError, match="0 of B"):
        family.generator_loss(batch, family.nets)
    with pytest.raises(DataError, match="no domains"):
        family.discriminator_loss(ImageBatch(torch.zeros(2, 3, 16, 16)), family.nets)


def real_batch(n=6):
    torch.manual_seed(3)
    return ImageBatch(torch.rand(n, 3, 16, 16) * 2 - 1, domains=torch.arange(n) % 2)


def float_state(module):
    return {k: v.clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}


def test_the_discriminator_phase_changes_only_the_discriminators_and_their_pools():
    family = tiny()
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    generator_phase, discriminator_phase = family.phases()
    assert (generator_phase.modules, discriminator_phase.modules) == (("G",), ("D",))
    run_phase(generator_phase, real_batch(), nets, optimizers)
    assert int(nets["D"].pool_a.count) == int(nets["D"].pool_b.count) == 0  # G's phase leaves D's pools alone
    g_before, d_before = float_state(nets["G"]), float_state(nets["D"])
    run_phase(discriminator_phase, real_batch(), nets, optimizers)
    assert all(torch.equal(g_before[k], v) for k, v in float_state(nets["G"]).items())
    d_after = float_state(nets["D"])
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before if k.startswith("d_a."))
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before if k.startswith("d_b."))
    assert int(nets["D"].pool_a.count) == int(nets["D"].pool_b.count) == 3


def test_discriminators_use_instance_norm_and_pools_of_the_configured_size():
    family = tiny(pool_size=7)
    discriminators = family.nets["D"]
    assert any(isinstance(m, nn.InstanceNorm2d) for m in discriminators.d_a.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in family.nets.modules())
    assert discriminators.pool_a.images.shape == discriminators.pool_b.images.shape == (7, 3, 16, 16)
    assert get_family("cyclegan").Config().pool_size == 50


# -- the ResNet generator -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
def test_resnet_generator_keeps_the_image_shape_and_range(size):
    torch.manual_seed(0)
    generator = ResnetGenerator(3, 2, width=4, blocks=2)
    bottleneck = []
    for block in generator.net:
        if isinstance(block, ResidualBlock):
            block.register_forward_hook(lambda module, args, output: bottleneck.append(output.shape))
    out = generator(torch.rand(2, 3, size, size) * 2 - 1)
    assert out.shape == (2, 2, size, size) and out.abs().max() <= 1
    # two stride-2 convolutions: the residual blocks run at a quarter of the side with 4k channels
    assert bottleneck == [(2, 16, size // 4, size // 4)] * 2


def test_resnet_generator_has_the_configured_blocks_and_reflection_padding():
    generator = ResnetGenerator(3, 3, width=8, blocks=5)
    assert sum(isinstance(m, ResidualBlock) for m in generator.modules()) == 5
    first_conv = next(m for m in generator.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.kernel_size == (7, 7) and first_conv.out_channels == 8
    assert isinstance(generator.net[0], nn.ReflectionPad2d) and isinstance(generator.net[-1], nn.Tanh)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())


def test_residual_block_adds_its_input():
    block = ResidualBlock(2)
    for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.rand(1, 2, 4, 4)
    torch.testing.assert_close(block(x), x)  # zero convolutions: the body is 0, the block the identity


def test_image_sizes_the_generator_cannot_quarter_are_refused():
    with pytest.raises(ConfigError, match="multiple of 4"):
        tiny(DataSpec(channels=3, image_size=18, num_domains=2))
    with pytest.raises(ConfigError, match="two domains"):
        tiny(DataSpec(channels=3, image_size=16, num_domains=3))


# -- generate and the export ----------------------------------------------------------------------


def with_stub_generators(family):
    family.nets["G"] = stub_generators()
    return family


def test_generate_translates_by_domain():
    family = with_stub_generators(tiny(SPEC_2PX))
    images = torch.cat([A, B, B])
    condition = DomainCondition(images, torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0]),
                                references=torch.ones(3, 1, 2, 2))  # ignored
    torch.testing.assert_close(family.generate(3, condition), torch.cat([A + 0.5, B - 0.25, B - 0.25]))
    # to its own domain: the target's generator (the one the identity term trains to leave it alone)
    same = DomainCondition(images, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))
    torch.testing.assert_close(family.generate(3, same), torch.cat([A - 0.25, B + 0.5, B + 0.5]))


def test_generate_refuses_bad_conditions():
    family = tiny()
    images = torch.zeros(2, 3, 16, 16)
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(2, images)
    with pytest.raises(DataError, match="2 source images for 3"):
        family.generate(3, DomainCondition(images, torch.tensor([0, 1]), torch.tensor([1, 0])))
    with pytest.raises(DataError, match=r"targets \[2\]"):
        family.generate(2, DomainCondition(images, torch.tensor([0, 1]), torch.tensor([2, 2])))


def test_export_mixes_the_generators_by_the_target_plane():
    family = with_stub_generators(tiny(SPEC_2PX))
    exported = family.export_generator()
    inputs = exported.inputs(torch.cat([A, B]), torch.tensor([1, 0]))
    assert inputs.shape == (2, 2, 2, 2)
    torch.testing.assert_close(exported(inputs), torch.cat([A + 0.5, B - 0.25]))


def test_export_matches_generate():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator()
    assert exported.condition_shape == (4, 16, 16) and exported.condition_kind == "image_domain"
    example = exported.example_inputs(4)
    assert example[:, 3, 0, 0].tolist() == [1, 0, 1, 0] and example[:, :3].abs().max() <= 1
    condition = DomainCondition(example[:, :3], torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 1, 0]))
    with torch.no_grad():
        torch.testing.assert_close(exported(example), family.generate(4, condition), atol=1e-6, rtol=0)


def test_export_survives_torch_export_with_any_batch_size():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=0)
