"""pix2pix: its losses against hand values, the pairs D sees, the U-Net's skips and shapes, test-time dropout."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import DataSpec, ImageBatch, build_family, get_family
from components.families.pix2pix import pix2pix_discriminator_loss, pix2pix_generator_loss
from components.nets.unet import UNetGenerator, unet_depth

LN2, LN3 = math.log(2), math.log(3)
SPEC = DataSpec(channels=3, image_size=16, input_channels=1)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("pix2pix", spec, {**get_family("pix2pix").tiny, **overrides})


def square(*values):
    """Four values as a 1 x 1 x 2 x 2 image, row by row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


# -- pure losses ----------------------------------------------------------------------------------

OUTPUTS = square(0.5, -0.5, 1.0, 0.0)
TARGETS = square(0.0, -0.25, 1.0, 0.25)  # |differences| 0.5, 0.25, 0, 0.25: mean 0.25


def test_l1_term_hand_value():
    assert losses.l1_reconstruction_loss(OUTPUTS, TARGETS).item() == pytest.approx(0.25)
    _, _, l1 = pix2pix_generator_loss(t(0.0), OUTPUTS, TARGETS, l1_weight=100.0)
    assert l1.item() == pytest.approx(0.25)


def test_generator_loss_is_adversarial_plus_lambda_times_l1():
    # logits (0, ln 3) -> D = (1/2, 3/4): -log D = (ln 2, ln 4/3), mean (ln 2 + ln 4/3) / 2; L1 0.25, times 100
    total, adversarial, l1 = pix2pix_generator_loss(t(0.0, LN3), OUTPUTS, TARGETS, l1_weight=100.0)
    assert adversarial.item() == pytest.approx((LN2 + math.log(4 / 3)) / 2)
    assert total.item() == pytest.approx((LN2 + math.log(4 / 3)) / 2 + 25.0)
    assert pix2pix_generator_loss(t(0.0, LN3), OUTPUTS, TARGETS, l1_weight=0.0)[0].item() == pytest.approx(
        (LN2 + math.log(4 / 3)) / 2)


def test_discriminator_loss_is_half_the_bce():
    # real (0, ln 3): -log D = (ln 2, ln 4/3), mean (ln 2 + ln 4/3) / 2; fake -ln 3 -> D = 1/4: -log(3/4) = ln 4/3
    expected = 0.5 * ((LN2 + math.log(4 / 3)) / 2 + math.log(4 / 3))
    assert pix2pix_discriminator_loss(t(0.0, LN3), t(-LN3)).item() == pytest.approx(expected)


# -- what the phases feed D and G -----------------------------------------------------------------


class HalfGenerator(nn.Module):
    """G(x) = x / 2, whatever the dropout flag."""

    def forward(self, inputs, dropout=True):
        return inputs / 2


class RecordingDiscriminator(nn.Module):
    """Remembers each input and returns an activation list whose last entry is zero logits (D = 1/2)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.scale = nn.Parameter(torch.zeros(()))  # a parameter so the loss has a graph

    def forward(self, pairs):
        self.seen.append(pairs.detach().clone())
        return [pairs, self.scale * pairs[:, :1, :1, :1]]


def stub_batch():
    inputs = square(1.0, -1.0, 0.0, 0.5)  # G(x) = (0.5, -0.5, 0, 0.25)
    return ImageBatch(TARGETS, inputs=inputs)


def test_generator_phase_logs_the_l1_to_the_target_and_judges_the_pair():
    family = tiny(DataSpec(channels=1, image_size=4, input_channels=1))
    nets = {"G": HalfGenerator(), "D": RecordingDiscriminator()}
    batch = stub_batch()
    loss, logs = family.generator_loss(batch, nets)
    # |G(x) - y| = |0.5 - 0|, |-0.5 + 0.25|, |0 - 1|, |0.25 - 0.25| = 0.5, 0.25, 1, 0: mean 0.4375; D = 1/2: ln 2
    assert logs["g_l1"] == pytest.approx(0.4375)
    assert logs["g_adv"] == pytest.approx(LN2)
    assert loss.item() == pytest.approx(LN2 + 43.75)
    (pair,) = nets["D"].seen
    torch.testing.assert_close(pair, torch.cat([batch.inputs, batch.inputs / 2], dim=1))


def test_discriminator_phase_sees_input_with_target_then_input_with_output():
    family = tiny(DataSpec(channels=1, image_size=4, input_channels=1))
    nets = {"G": HalfGenerator(), "D": RecordingDiscriminator()}
    batch = stub_batch()
    loss, logs = family.discriminator_loss(batch, nets)
    real_pair, fake_pair = nets["D"].seen
    torch.testing.assert_close(real_pair, torch.cat([batch.inputs, batch.images], dim=1))
    torch.testing.assert_close(fake_pair, torch.cat([batch.inputs, batch.inputs / 2], dim=1))
    # zero logits on both sides: (ln 2 + ln 2) / 2
    assert loss.item() == pytest.approx(LN2) and logs["d_real"] == logs["d_fake"] == pytest.approx(0.5)


def test_the_discriminator_is_conditional_on_the_input():
    family = tiny()
    family.nets.eval()
    first_conv = family.nets["D"].blocks[0][0]
    assert first_conv.in_channels == SPEC.input_channels + SPEC.channels
    torch.manual_seed(1)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    inputs = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        same = family.patch_logits(family.nets, inputs, images)
        other = family.patch_logits(family.nets, -inputs, images)
    assert not torch.allclose(same, other)


# -- the U-Net -----------------------------------------------------------------------------------


def test_decoder_layers_read_the_encoder_maps_of_their_size():
    torch.manual_seed(0)
    unet = UNetGenerator(1, 1, 16, width=4, max_width=8).eval()
    encoded, decoder_inputs = [], []
    for layer in unet.encoder:
        layer.register_forward_hook(lambda module, args, output: encoded.append(output))
    for layer in unet.decoder:
        layer.register_forward_hook(lambda module, args, output: decoder_inputs.append(args[0]))
    unet(torch.rand(2, 1, 16, 16), dropout=False)
    assert [e.shape[-1] for e in encoded] == [8, 4, 2, 1]
    torch.testing.assert_close(decoder_inputs[0], encoded[-1])  # the innermost layer sees the bottleneck alone
    for k in range(1, len(unet.decoder)):  # the others: the previous decoder map, then the encoder map
        skip = encoded[-1 - k]
        assert decoder_inputs[k].shape[-1] == skip.shape[-1]
        torch.testing.assert_close(decoder_inputs[k][:, -skip.size(1):], skip)


def test_output_depends_on_full_resolution_input_around_a_cut_bottleneck():
    torch.manual_seed(0)
    unet = UNetGenerator(1, 1, 32, width=4, max_width=8).eval()
    with torch.no_grad():
        unet.decoder[0][0].weight.zero_()  # nothing passes the 1 x 1 bottleneck now
        inputs = torch.rand(1, 1, 32, 32) * 2 - 1
        nudged = inputs.clone()
        nudged[0, 0, 13, 21] += 0.5  # one pixel
        change = (unet(nudged, dropout=False) - unet(inputs, dropout=False)).abs()[0, 0]
        bottleneck_only = unet.decoder[0](unet.encoder[-1](torch.rand(1, 8, 2, 2)))
    assert bottleneck_only.abs().max() == 0
    assert change.max() > 0
    # the change is largest near the nudged pixel: the shallow skips carry it at fine resolution
    row, col = divmod(int(change.argmax()), 32)
    assert abs(row - 13) <= 4 and abs(col - 21) <= 4


@pytest.mark.parametrize("size, depth", [(16, 4), (32, 5), (64, 6)])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_networks_have_the_image_shape_at_each_size(size, depth, out_channels):
    family = tiny(DataSpec(channels=out_channels, image_size=size, input_channels=1))
    unet = family.nets["G"]
    assert unet.depth == depth == unet_depth(size)
    inputs = torch.rand(3, 1, size, size) * 2 - 1
    outputs = unet(inputs)
    assert outputs.shape == (3, out_channels, size, size)
    assert outputs.min() >= -1 and outputs.max() <= 1
    logits = family.patch_logits(family.nets, inputs, outputs)
    # one stride-2 layer (size / 2), then two 4x4 stride-1 convolutions with padding 1 (one pixel less each)
    assert logits.shape == (3, 1, size // 2 - 2, size // 2 - 2)


def test_default_networks_at_32_pixels():
    family = build_family("pix2pix", DataSpec(channels=1, image_size=32, input_channels=1))
    outputs = family.nets["G"](torch.rand(4, 1, 32, 32) * 2 - 1)
    assert outputs.shape == (4, 1, 32, 32)
    assert family.patch_logits(family.nets, torch.zeros(4, 1, 32, 32), outputs).shape == (4, 1, 14, 14)
    assert family.nets["D"].receptive_field == 16


def test_unet_refuses_an_odd_image_size():
    with pytest.raises(ValueError, match="even"):
        unet_depth(15)
    with pytest.raises(ConfigError, match="odd"):
        build_family("pix2pix", DataSpec(channels=1, image_size=15, input_channels=1))


# -- test-time dropout and the export -------------------------------------------------------------


def test_generate_keeps_dropout_on_in_eval_mode_but_the_export_is_deterministic():
    family = tiny()
    family.nets.eval()
    torch.manual_seed(3)
    inputs = torch.rand(4, 1, 16, 16) * 2 - 1
    first, second = family.generate(4, inputs), family.generate(4, inputs)
    assert not torch.allclose(first, second)
    exported = family.export_generator().eval()
    with torch.no_grad():
        once, again = exported(inputs), exported(inputs)
        torch.testing.assert_close(once, family.nets["G"](inputs, dropout=False), rtol=0, atol=0)
    torch.testing.assert_close(once, again, rtol=0, atol=0)
    assert exported.condition_shape == (1, 16, 16) and exported.condition_kind == "image"


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=0)


def test_generate_needs_one_source_image_per_output():
    family = tiny()
    with pytest.raises(DataError, match="3 source images for 4"):
        family.generate(4, torch.zeros(3, 1, 16, 16))
    with pytest.raises(DataError, match="condition"):
        family.generate(4)
