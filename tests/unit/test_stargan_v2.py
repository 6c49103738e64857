"""StarGAN v2: its losses and schedule against hand values, the multi-output networks' branch picking, the EMA,
the shapes at 16 / 32 / 64 px, generation (latent- and reference-guided) and the export."""

import math

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.stargan_v2 import (Discriminator, MappingNetwork, StyleEncoder, cycle_consistency_loss,
                                            diversity_sensitive_loss, diversity_weight, pick_domain,
                                            stargan_v2_discriminator_loss, style_reconstruction_loss)
from components.training.loop import run_phase

LN2 = math.log(2)
SPEC = DataSpec(channels=3, image_size=16, num_domains=3)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("stargan_v2", spec, {**get_family("stargan_v2").tiny, **overrides})


def balanced_batch(n=6, spec=SPEC, seed=1):
    torch.manual_seed(seed)
    images = torch.rand(n, spec.channels, spec.image_size, spec.image_size) * 2 - 1
    return ImageBatch(images, domains=torch.arange(n) % spec.num_domains)


# -- pure losses and the schedule -----------------------------------------------------------------


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm_times_gamma_over_two():
    # D(x) = w . x with w = (1, 2, -2): grad_x D = w for every x, ||w||^2 = 1 + 4 + 4 = 9
    w = torch.tensor([1.0, 2.0, -2.0])
    real = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, 1.0]], requires_grad=True)  # w . x = 0 for both rows
    real_logits = real @ w
    fake_logits = torch.zeros(2)
    total, logistic, r1 = stargan_v2_discriminator_loss(real_logits, fake_logits, real, r1_gamma=1.0)
    assert r1.item() == pytest.approx(9.0)
    assert logistic.item() == pytest.approx(2 * LN2)  # logits 0 on both sides: ln 2 + ln 2
    assert total.item() == pytest.approx(2 * LN2 + 0.5 * 9.0)
    assert stargan_v2_discriminator_loss(real @ w, fake_logits, real, r1_gamma=4.0)[0].item() == pytest.approx(
        2 * LN2 + 18.0)


def test_diversity_sensitive_loss_is_the_l1_mean_and_the_second_output_is_a_constant():
    first = torch.tensor([[0.5, -0.5], [1.0, 0.0]], requires_grad=True)
    second = torch.tensor([[0.0, -0.25], [1.0, 1.0]], requires_grad=True)
    # |differences| 0.5, 0.25, 0, 1: mean 0.4375
    loss = diversity_sensitive_loss(first, second)
    assert loss.item() == pytest.approx(0.4375)
    loss.backward()
    assert second.grad is None
    # d/d first of mean |first - second| = sign / 4, sign(0) = 0
    torch.testing.assert_close(first.grad, torch.tensor([[0.25, -0.25], [0.0, -0.25]]))


@pytest.mark.parametrize("step, expected", [(0, 2.0), (25, 1.5), (50, 1.0), (100, 0.0), (150, 0.0)])
def test_diversity_weight_decays_linearly_to_zero(step, expected):
    # initial 2 (the paper's AFHQ value) over 100 steps: 2 (1 - t / 100), never negative
    assert diversity_weight(step, 2.0, 100) == pytest.approx(expected)
    assert diversity_weight(torch.tensor(step), 2.0, 100) == pytest.approx(expected)


def test_style_reconstruction_and_cycle_losses_are_l1_means():
    # |(1, 0, -1, 2) - (0.5, 0, 1, 2)| = (0.5, 0, 2, 0): mean 0.625
    assert style_reconstruction_loss(torch.tensor([[1.0, 0.0], [-1.0, 2.0]]),
                                     torch.tensor([[0.5, 0.0], [1.0, 2.0]])).item() == pytest.approx(0.625)
    # |(0.5, -0.5) - (2, -1)| = (1.5, 0.5): mean 1
    assert cycle_consistency_loss(torch.tensor([0.5, -0.5]), torch.tensor([2.0, -1.0])).item() == pytest.approx(1.0)


# -- the generator step with stub networks --------------------------------------------------------


class ShiftGenerator(nn.Module):
    """G(x, s) = x + s_0 (the style's first component added to every pixel), with G's step counter."""

    def __init__(self):
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x, s):
        return x + s[:, :1, None, None]


class MeanEncoder(nn.Module):
    """E(x, y) = (mean(x) + y, mean(x) + y): both style components."""

    def forward(self, x, y):
        return (x.flatten(1).mean(1) + y).unsqueeze(1).expand(-1, 2)


class ZeroDiscriminator(nn.Module):
    """D(x, y) = 0: D = 1/2 for everything."""

    def forward(self, x, y):
        return x.flatten(1).sum(1) * 0


def stub_nets():
    return {"G": ShiftGenerator(), "E": MeanEncoder(), "D": ZeroDiscriminator()}


def test_generator_loss_terms_by_hand_with_stub_networks():
    family = tiny(DataSpec(channels=1, image_size=16, num_domains=2))
    images = torch.tensor([0.5, -0.5]).view(2, 1, 1, 1)
    batch = ImageBatch(images, domains=torch.tensor([0, 1]))
    styles = torch.tensor([[1.0, 0.0], [-1.0, 2.0]])
    second_styles = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    targets = torch.tensor([1, 0])
    loss, logs = family.generator_loss(batch, stub_nets(), styles, second_styles, targets, "lat")
    # fake = x + s_0 = (1.5, -1.5); E(fake, target) = (1.5 + 1, -1.5 + 0) per component:
    # |s - E| = |(1, 0) - 2.5|, |(-1, 2) + 1.5| = (1.5, 2.5, 0.5, 3.5): mean 2
    assert logs["g_sty_lat"] == pytest.approx(2.0)
    # second fake = x + s2_0 = (0.5, 0): |(1.5, -1.5) - (0.5, 0)| = (1, 1.5): mean 1.25
    assert logs["g_ds_lat"] == pytest.approx(1.25)
    # source style E(x, y_src) = (0.5 + 0, -0.5 + 1) = (0.5, 0.5); back: fake + 0.5 = (2, -1); |x - back| = (1.5, 0.5)
    assert logs["g_cyc_lat"] == pytest.approx(1.0)
    assert logs["g_adv_lat"] == pytest.approx(LN2)
    assert logs["lambda_ds"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(LN2 + 2.0 - 1.25 + 1.0)


def test_the_diversity_weight_follows_the_generators_step_counter():
    family = tiny(DataSpec(channels=1, image_size=16, num_domains=2), lambda_ds=2.0, ds_decay_steps=4)
    nets = stub_nets()
    nets["G"].steps.fill_(3)  # 2 (1 - 3 / 4) = 0.5
    batch = ImageBatch(torch.tensor([0.5, -0.5]).view(2, 1, 1, 1), domains=torch.tensor([0, 1]))
    styles, second = torch.tensor([[1.0, 0.0], [-1.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    loss, logs = family.generator_loss(batch, nets, styles, second, torch.tensor([1, 0]), "lat")
    assert logs["lambda_ds"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(LN2 + 2.0 - 0.5 * 1.25 + 1.0)


def test_training_advances_the_step_counter_once_per_iteration_and_it_is_checkpointed():
    family = tiny(ds_decay_steps=2)
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    seen = []
    for _ in range(3):
        for phase in family.phases():
            logs = run_phase(phase, balanced_batch(), nets, optimizers)
            if phase.name == "G_latent":
                seen.append(logs["lambda_ds"])
    assert seen == pytest.approx([1.0, 0.5, 0.0])  # 1 - t / 2 at iterations 0, 1, 2
    assert int(family.nets["G"].steps) == 3 and int(family.nets["F"].steps) == 3
    resumed = tiny(ds_decay_steps=2)
    resumed.nets.load_state_dict(family.nets.state_dict())
    assert int(resumed.nets["G"].steps) == 3


# -- multi-output networks ------------------------------------------------------------------------


def test_pick_domain_takes_each_rows_own_column():
    outputs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(pick_domain(outputs, torch.tensor([2, 0])), torch.tensor([3.0, 4.0]))
    styles = torch.arange(12.0).view(2, 3, 2)  # N x D x style_dim
    torch.testing.assert_close(pick_domain(styles, torch.tensor([1, 2])), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))


def test_mapping_network_output_is_the_branch_of_the_rows_domain():
    torch.manual_seed(0)
    mapping = MappingNetwork(latent_dim=4, style_dim=3, num_domains=3, width=8, shared_layers=2, branch_layers=2)
    z = torch.randn(5, 4)
    domains = torch.tensor([0, 2, 1, 2, 0])
    styles = mapping(z, domains)
    hidden = mapping.shared(z)
    for row, domain in enumerate(domains.tolist()):
        torch.testing.assert_close(styles[row], mapping.branches[domain](hidden[row:row + 1])[0])
    assert not torch.allclose(mapping(z, torch.zeros(5, dtype=torch.long)), mapping(z, torch.ones(5, dtype=torch.long)))


def test_multi_task_discriminator_returns_the_logit_of_the_asked_domain():
    torch.manual_seed(0)
    discriminator = Discriminator(channels=3, image_size=16, num_domains=3, width=4, max_width=8)
    with torch.no_grad():
        discriminator.logits.weight.zero_()
        discriminator.logits.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    images = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(discriminator(images, torch.tensor([2, 0, 1, 2])), torch.tensor([0.3, 0.1, 0.2, 0.3]))


def test_style_encoder_heads_are_per_domain():
    torch.manual_seed(0)
    encoder = StyleEncoder(channels=3, image_size=16, style_dim=2, num_domains=3, width=4, max_width=8)
    with torch.no_grad():
        encoder.heads.weight.zero_()
        encoder.heads.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))  # domain d's head: rows 2d, 2d + 1
    styles = encoder(torch.rand(3, 3, 16, 16), torch.tensor([1, 0, 2]))
    torch.testing.assert_close(styles, torch.tensor([[3.0, 4.0], [1.0, 2.0], [5.0, 6.0]]))


# -- EMA ------------------------------------------------------------------------------------------


def test_each_ema_follows_its_network_after_the_step_that_trains_it():
    family = tiny(ema_warmup=False)
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    assert all(p.requires_grad for p in optimizers["G"].param_groups[0]["params"])
    assert len(optimizers["G"].param_groups[0]["params"]) == len(list(family.nets["G"].net.parameters()))
    d_latent, d_reference, g_latent, g_reference = family.phases()
    mapping_ema = family.nets["F"].ema.branches[0][0].weight.clone()
    generator_ema = family.nets["G"].ema.to_rgb[2].weight.clone()
    run_phase(g_latent, balanced_batch(), nets, optimizers)
    expected = 0.999 * mapping_ema + 0.001 * family.nets["F"].net.branches[0][0].weight.detach()
    torch.testing.assert_close(family.nets["F"].ema.branches[0][0].weight, expected)
    torch.testing.assert_close(family.nets["G"].ema.to_rgb[2].weight, generator_ema)  # G's waits for the last step
    run_phase(g_reference, balanced_batch(), nets, optimizers)
    expected = 0.999 * generator_ema + 0.001 * family.nets["G"].net.to_rgb[2].weight.detach()
    torch.testing.assert_close(family.nets["G"].ema.to_rgb[2].weight, expected)
    warm = tiny()  # with the warm-up, the first update's decay is 1/10
    ema = warm.nets["G"].ema.to_rgb[2].weight.clone()
    run_phase(warm.phases()[3], balanced_batch(), dict(warm.nets.items()), warm.build_optimizers())
    torch.testing.assert_close(warm.nets["G"].ema.to_rgb[2].weight,
                               0.1 * ema + 0.9 * warm.nets["G"].net.to_rgb[2].weight.detach())


def test_optimizers_use_the_papers_rates_betas_and_weight_decay():
    optimizers = tiny(lr=1e-4, f_lr=1e-6).build_optimizers()  # the paper's rates (the defaults are 10x: see config)
    for name, lr in (("G", 1e-4), ("E", 1e-4), ("D", 1e-4), ("F", 1e-6)):
        group = optimizers[name].param_groups[0]
        assert group["lr"] == lr and group["betas"] == (0.0, 0.99) and group["weight_decay"] == 1e-4


# -- what the discriminator steps see -------------------------------------------------------------


class RecordingDiscriminator(nn.Module):
    """Remembers each (images, domains) and returns a logit linear in the images."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x, y):
        self.seen.append((x.detach().clone(), y.clone()))
        return self.weight * x.flatten(1).mean(1)


def test_reference_discriminator_step_judges_reals_by_source_and_fakes_by_the_references_domain():
    family = tiny(DataSpec(channels=1, image_size=16, num_domains=3))
    nets = {"G": ShiftGenerator(), "E": MeanEncoder(), "D": RecordingDiscriminator()}
    batch = balanced_batch(6, DataSpec(channels=1, image_size=16, num_domains=3))
    torch.manual_seed(5)
    rows, _ = family.reference_pairs(batch.domains)
    torch.manual_seed(5)
    loss, logs = family.discriminator_reference_loss(batch, nets)
    (real, real_domains), (fake, fake_domains) = nets["D"].seen
    torch.testing.assert_close(real, batch.images)
    torch.testing.assert_close(real_domains, batch.domains)
    targets = batch.domains[rows]
    torch.testing.assert_close(fake_domains, targets)
    reference_styles = MeanEncoder()(batch.images[rows], targets)
    torch.testing.assert_close(fake, batch.images + reference_styles[:, :1, None, None])
    # D = weight * mean(x): grad_x = 1 / 256 per pixel, ||grad||^2 = 256 / 256^2; the loss adds half of it
    assert logs["r1_ref"] == pytest.approx(1 / 256)
    assert math.isfinite(loss.item())


def test_reference_pairs_are_two_rows_of_the_same_domain():
    domains = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for seed in range(5):
        torch.manual_seed(seed)
        first, second = get_family("stargan_v2").reference_pairs(domains)
        assert sorted(first.tolist()) == list(range(8))  # every row is a reference once
        assert torch.equal(domains[first], domains[second]) and bool((first != second).all())
    lonely_first, lonely_second = get_family("stargan_v2").reference_pairs(torch.tensor([0, 1]))
    assert torch.equal(lonely_first, lonely_second)  # no other row of its domain: itself


# -- shapes, generation, data it refuses ----------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
def test_networks_have_the_right_shapes_at_each_size(size):
    spec = DataSpec(channels=3, image_size=size, num_domains=3)
    family = tiny(spec)
    cfg, nets = family.config, family.nets
    images = torch.rand(2, 3, size, size) * 2 - 1
    domains = torch.tensor([0, 2])
    styles = nets["F"](torch.randn(2, cfg.latent_dim), domains)
    assert styles.shape == (2, cfg.style_dim)
    assert nets["E"](images, domains).shape == (2, cfg.style_dim)
    assert nets["G"](images, styles).shape == (2, 3, size, size)
    assert nets["D"](images, domains).shape == (2,)
    # G halves down to the 8 x 8 bottleneck: no halving at 8, 1 at 16, 3 at 64
    halvings = sum(block.downsample for block in nets["G"].net.encoder)
    assert halvings == int(math.log2(size // cfg.g_bottleneck))


def test_default_networks_at_32_pixels():
    family = build_family("stargan_v2", DataSpec(channels=3, image_size=32, num_domains=3))
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    domains = torch.arange(4) % 3
    generated = family.generate(4, DomainCondition(images, domains, (domains + 1) % 3, images.flip(0)))
    assert generated.shape == (4, 3, 32, 32) and generated.abs().max() <= 1


def test_latent_guided_generation_draws_fresh_styles_and_reference_guided_copies_the_references():
    family = tiny()
    family.nets.eval()
    batch = balanced_batch()
    target = (batch.domains + 1) % 3
    latent = DomainCondition(batch.images, batch.domains, target)
    assert not torch.allclose(family.generate(6, latent), family.generate(6, latent))
    references = batch.images.roll(1, 0)
    guided = family.generate(6, DomainCondition(batch.images, batch.domains, target, references))
    torch.testing.assert_close(guided, family.translate(batch.images, family.style_of(references, target)))
    torch.testing.assert_close(guided, family.generate(6, DomainCondition(batch.images, batch.domains, target,
                                                                          references)))
    z = torch.randn(6, family.config.latent_dim)
    torch.testing.assert_close(family.latent_style(z, target), family.nets["F"].ema(z, target))


def test_generate_needs_a_domain_condition_with_one_image_per_output():
    family = tiny()
    batch = balanced_batch()
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(6, batch.images)
    with pytest.raises(DataError, match="5 source images for 6"):
        family.generate(6, DomainCondition(batch.images[:5], batch.domains[:5], batch.domains[:5]))


def test_data_without_domains_is_refused():
    with pytest.raises(ConfigError, match="at least 2 domains"):
        build_family("stargan_v2", DataSpec(channels=3, image_size=16, num_attributes=5))


# -- export ---------------------------------------------------------------------------------------


def test_export_translates_with_the_ema_generator_and_the_style_planes():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    assert exported.condition_shape == (3 + family.config.style_dim, 16, 16)
    batch = balanced_batch()
    styles = family.style_of(batch.images.roll(1, 0), batch.domains)
    with torch.no_grad():
        torch.testing.assert_close(exported(exported.inputs(batch.images, styles)),
                                   family.translate(batch.images, styles))


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        assert inputs.shape == (n, 3 + family.config.style_dim, 16, 16)
        with torch.no_grad():
            outputs = program.module()(inputs)
            torch.testing.assert_close(outputs, exported(inputs), atol=1e-5, rtol=0)
        assert outputs.shape == (n, 3, 16, 16) and outputs.abs().max() <= 1
