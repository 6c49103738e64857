"""BEGAN, AC-GAN and InfoGAN: their losses against hand values, and each family's own behaviour."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.families import DataSpec, ImageBatch, build_family, get_family
from components.training.checkpoint import TrainingState, load_family, save_checkpoint

LN3 = math.log(3.0)  # softmax([ln 3, 0]) = (0.75, 0.25); sigmoid(ln 3) = 0.75
LOG_TWO_PI = math.log(2 * math.pi)
SPEC = DataSpec(channels=1, image_size=8, num_classes=3)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def tiny(name):
    torch.manual_seed(0)
    return build_family(name, SPEC, get_family(name).tiny)


# --- pure losses -------------------------------------------------------------------------------


def test_autoencoder_l1_energy_is_the_batch_mean_of_per_image_mean_abs_error():
    images = t(0.0, 1.0, 2.0, 2.0).view(2, 1, 1, 2)
    reconstructions = t(0.5, 0.0, 1.0, 4.0).view(2, 1, 1, 2)
    # |diff| = (0.5, 1) and (1, 2): per-image means 0.75 and 1.5, batch mean 1.125
    assert losses.autoencoder_l1_energy(images, reconstructions).item() == pytest.approx(1.125)


def test_began_discriminator_loss_is_real_energy_minus_k_times_fake_energy():
    # 0.3 - 0.2 * 0.5 = 0.2
    assert losses.began_discriminator_loss(t(0.3), t(0.5), 0.2).item() == pytest.approx(0.2)


def test_began_k_update_proportional_step():
    # 0.1 + 0.001 * (0.5 * 0.4 - 0.1) = 0.1 + 0.001 * 0.1 = 0.1001
    k = losses.began_k_update(t(0.1), t(0.4), t(0.1), gamma=0.5, lambda_k=0.001)
    assert k.item() == pytest.approx(0.1001)


def test_began_k_update_clips_to_the_unit_interval():
    # 0.9999 + 0.001 * (0.5 * 2 - 0) = 1.0009 -> 1;  0.0005 + 0.001 * (0 - 1) = -0.0005 -> 0
    assert losses.began_k_update(t(0.9999), t(2.0), t(0.0), 0.5, 0.001).item() == 1.0
    assert losses.began_k_update(t(0.0005), t(0.0), t(1.0), 0.5, 0.001).item() == 0.0


def test_began_convergence_measure():
    # 0.4 + |0.5 * 0.4 - 0.5| = 0.4 + 0.3 = 0.7
    assert losses.began_convergence_measure(t(0.4), t(0.5), 0.5).item() == pytest.approx(0.7)


def test_auxiliary_class_loss_is_the_mean_cross_entropy():
    logits = t(LN3, 0.0, 0.0, 0.0).view(2, 2)
    # sample 1: P(class 0) = 3/4 -> -ln .75; sample 2: P(class 1) = 1/2 -> ln 2; mean of the two
    value = losses.auxiliary_class_loss(logits, torch.tensor([0, 1])).item()
    assert value == pytest.approx((-math.log(0.75) + math.log(2)) / 2)


def test_categorical_code_loss_is_minus_log_q():
    # logits (ln 2, 0, 0): Q(c = 0 | x) = 2 / 4 -> -ln 0.5 = ln 2; uniform logits over 4 -> ln 4
    assert losses.categorical_code_loss(t(math.log(2), 0.0, 0.0).view(1, 3), torch.tensor([0])).item() == \
        pytest.approx(math.log(2))
    assert losses.categorical_code_loss(t(0.0, 0.0, 0.0, 0.0).view(1, 4), torch.tensor([2])).item() == \
        pytest.approx(math.log(4))


def test_gaussian_code_loss_with_unit_std():
    # dim 1: (1 - 0)^2 / 2 + ln 1 + ln(2 pi) / 2; dim 2: 0 + ln(2 pi) / 2; summed: 0.5 + ln(2 pi)
    value = losses.gaussian_code_loss(t(0.0, 1.0).view(1, 2), t(1.0, 1.0).view(1, 2)).item()
    assert value == pytest.approx(0.5 + LOG_TWO_PI)


def test_gaussian_code_loss_with_learned_std():
    # std 2: ((1 - 0) / 2)^2 / 2 + ln 2 + ln(2 pi) / 2 = 0.125 + ln 2 + ln(2 pi) / 2
    value = losses.gaussian_code_loss(t(0.0).view(1, 1), t(1.0).view(1, 1), t(math.log(2)).view(1, 1)).item()
    assert value == pytest.approx(0.125 + math.log(2) + LOG_TWO_PI / 2)


# --- BEGAN ---------------------------------------------------------------------------------------


class ConstantGenerator(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, z, labels=None):
        return torch.full((z.size(0), 1, 8, 8), self.value)


class ZeroReconstruction(nn.Module):
    """An auto-encoder that reconstructs every image as zeros, so L(v) = mean |v|; holds k_t like BEGAN's D."""

    def __init__(self, k):
        super().__init__()
        self.register_buffer("k_t", torch.tensor(k))

    def forward(self, x):
        return torch.zeros_like(x)


def real_batch(value, n=4, labels=None):
    return ImageBatch(torch.full((n, 1, 8, 8), value), labels)


def test_began_losses_report_convergence_m_and_step_k():
    family = build_family("began", SPEC)
    d = ZeroReconstruction(0.5)
    nets = {"G": ConstantGenerator(0.1), "D": d}
    loss, logs = family.discriminator_loss(real_batch(0.4), nets)
    # L(x) = 0.4, L(G(z)) = 0.1: L_D = 0.4 - 0.5 * 0.1 = 0.35
    assert loss.item() == pytest.approx(0.35, rel=1e-5)
    assert logs["k_t"] == pytest.approx(0.5)  # the k_t the loss used
    assert logs["convergence_m"] == pytest.approx(0.4 + abs(0.5 * 0.4 - 0.1), rel=1e-5)  # 0.5
    assert d.k_t.item() == pytest.approx(0.5 + 0.001 * (0.5 * 0.4 - 0.1), rel=1e-5)  # 0.5001 for the next step
    g_loss, _ = family.generator_loss(real_batch(0.4), nets)
    assert g_loss.item() == pytest.approx(0.1, rel=1e-5)  # L_G = L(G(z))


@pytest.mark.parametrize("k, real, fake, clipped", [(1.0, 0.4, 0.1, 1.0), (0.0, 0.1, 0.4, 0.0)])
def test_began_k_t_is_clipped_in_the_family(k, real, fake, clipped):
    family = build_family("began", SPEC)
    d = ZeroReconstruction(k)
    family.discriminator_loss(real_batch(real), {"G": ConstantGenerator(fake), "D": d})
    assert d.k_t.item() == clipped


def test_began_k_t_survives_a_checkpoint_round_trip(tmp_path):
    family = tiny("began")
    optimizers = family.build_optimizers()
    family.nets["D"].k_t.fill_(0.37)
    save_checkpoint(tmp_path / "ckpt", family, optimizers, TrainingState(step=5))
    restored, _ = load_family(tmp_path / "ckpt")
    assert restored.nets["D"].k_t.item() == pytest.approx(0.37)
    assert restored.nets["D"].k_t.item() != restored.config.k_init


# --- AC-GAN --------------------------------------------------------------------------------------


class SourceAndClassDiscriminator(nn.Module):
    """Column 0 (source logit) = mean pixel; class logits all zero, so each class term is ln 3."""

    def forward(self, x):
        return torch.cat([x.flatten(1).mean(1, keepdim=True), torch.zeros(x.size(0), 3)], dim=1)


def test_acgan_losses_sum_source_and_class_terms():
    family = build_family("acgan", SPEC)
    nets = {"G": ConstantGenerator(-LN3), "D": SourceAndClassDiscriminator()}
    labels = torch.arange(6) % 3
    loss, logs = family.discriminator_loss(real_batch(LN3, n=6, labels=labels), nets)
    # source: -ln .75 - ln(1 - .25); class: ln 3 on real + ln 3 on fake
    assert loss.item() == pytest.approx(-2 * math.log(0.75) + 2 * LN3, rel=1e-5)
    assert logs["aux_acc_real"] == pytest.approx(1 / 3)  # argmax of equal logits is class 0: 2 of 6
    g_loss, _ = family.generator_loss(real_batch(LN3, n=6, labels=labels), nets)
    assert g_loss.item() == pytest.approx(-math.log(0.25) + LN3, rel=1e-5)  # non-saturating source + ln 3


def test_acgan_generates_the_asked_classes_in_task_shape():
    family = tiny("acgan")
    family.nets.eval()
    images = family.generate(7, torch.tensor([0, 1, 2, 2, 1, 0, 1]))
    assert images.shape == (7, 1, 8, 8) and torch.isfinite(images).all()
    torch.manual_seed(3)
    as_zero = family.generate(2, torch.tensor([0, 0]))
    torch.manual_seed(3)
    as_two = family.generate(2, torch.tensor([2, 2]))
    assert not torch.equal(as_zero, as_two)  # same z, other class: G reads the label


# --- InfoGAN -------------------------------------------------------------------------------------


def infogan_codes():
    return {"categorical": torch.tensor([0, 1, 2, 1]), "continuous": torch.tensor([[0.5, -0.5]] * 4)}


def test_infogan_fixed_z_and_codes_give_identical_images():
    family = tiny("infogan")
    family.nets.eval()
    torch.manual_seed(11)
    first = family.generate(4, infogan_codes())
    torch.manual_seed(11)
    assert torch.equal(family.generate(4, infogan_codes()), first)


def test_infogan_fixed_codes_vary_only_through_z():
    family = tiny("infogan")
    family.nets.eval()
    torch.manual_seed(11)
    first = family.generate(4, infogan_codes())
    torch.manual_seed(12)
    assert not torch.equal(family.generate(4, infogan_codes()), first)


def test_infogan_codes_as_one_tensor_match_the_dict_and_change_the_image():
    family = tiny("infogan")
    family.nets.eval()
    codes = infogan_codes()
    as_tensor = torch.cat([nn.functional.one_hot(codes["categorical"], 3).float(), codes["continuous"]], dim=1)
    torch.manual_seed(5)
    from_dict = family.generate(4, codes)
    torch.manual_seed(5)
    assert torch.equal(family.generate(4, as_tensor), from_dict)
    torch.manual_seed(5)
    other = family.generate(4, {**codes, "categorical": torch.tensor([2, 2, 0, 0])})
    assert not torch.equal(other, from_dict)  # same z, other category


def test_infogan_exported_generator_takes_z_onehot_and_continuous_codes():
    family = tiny("infogan")
    family.nets.eval()
    exported = family.export_generator()
    inputs = exported.example_inputs(6)
    cfg = family.config
    assert inputs.shape == (6, cfg.z_dim + cfg.categories + cfg.continuous_codes)
    onehot = inputs[:, cfg.z_dim:cfg.z_dim + cfg.categories]
    assert torch.equal(onehot.argmax(1), torch.arange(6) % cfg.categories) and torch.equal(onehot.sum(1), torch.ones(6))
    assert inputs[:, -cfg.continuous_codes:].abs().max() <= 1
    with torch.no_grad():
        assert torch.equal(exported(inputs), family.nets["G"](inputs))


def test_infogan_information_loss_weights_the_code_terms():
    family = build_family("infogan", SPEC, {"categories": 4, "lambda_continuous": 0.1})
    q_out = torch.zeros(1, 4 + 2)  # uniform logits over 4; means 0
    loss, logs = family.information_loss(q_out, torch.tensor([1]), torch.tensor([[1.0, 0.0]]))
    # 1 * ln 4 + 0.1 * (0.5 + ln(2 pi));  L_I estimate for the categorical: ln 4 - ln 4 = 0
    assert loss.item() == pytest.approx(math.log(4) + 0.1 * (0.5 + LOG_TWO_PI), rel=1e-5)
    assert logs["mi_categorical"] == pytest.approx(0.0, abs=1e-6)
