"""GAN-CLS + GAN-INT: the losses against hand values, which pairs D and G see, mismatches, export, evaluation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from components import losses
from components.config import EvaluationConfig
from components.data import RawImages, captions, load_prepared, write_prepared
from components.errors import ConfigError, DataError
from components.evaluation import evaluate_checkpoint
from components.families import DataSpec, ImageBatch, build_family, get_family
from components.families.gan_t2i import TextEncoder, mismatched_indices
from components.training.checkpoint import TrainingState, save_checkpoint

LN2, LN3 = math.log(2), math.log(3)
SPEC = DataSpec(channels=1, image_size=8, num_classes=3)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def tiny(spec=SPEC):
    torch.manual_seed(0)
    return build_family("gan_t2i", spec, get_family("gan_t2i").tiny)


# -- pure losses ----------------------------------------------------------------------------------

def test_matching_aware_discriminator_loss_hand_value():
    # D = sigmoid: real (0, ln 3) -> D = (1/2, 3/4): -log D = (ln 2, ln 4/3), mean (ln 2 + ln 4/3) / 2
    # mismatched 0 -> -log(1 - 1/2) = ln 2; fake -ln 3 -> D = 1/4: -log(3/4) = ln 4/3; halved and summed
    value = losses.matching_aware_discriminator_loss(t(0.0, LN3), t(0.0), t(-LN3))
    assert value.item() == pytest.approx((LN2 + math.log(4 / 3)) / 2 + (LN2 + math.log(4 / 3)) / 2)


def test_matching_aware_loss_weighs_the_two_negatives_half_each():
    # a confident wrong answer on one negative costs half what it costs on the positive
    base = losses.matching_aware_discriminator_loss(t(10.0), t(-10.0), t(-10.0))
    wrong_real = losses.matching_aware_discriminator_loss(t(-10.0), t(-10.0), t(-10.0))
    wrong_mismatch = losses.matching_aware_discriminator_loss(t(10.0), t(10.0), t(-10.0))
    assert (wrong_real - base).item() == pytest.approx(10.0, abs=1e-3)
    assert (wrong_mismatch - base).item() == pytest.approx(5.0, abs=1e-3)


def test_gan_int_generator_loss_hand_value():
    # fake ln 3 -> -log(3/4) = ln 4/3; interpolated 0 -> -log(1/2) = ln 2, weighted
    assert losses.gan_int_generator_loss(t(LN3), t(0.0)).item() == pytest.approx(math.log(4 / 3) + LN2)
    assert losses.gan_int_generator_loss(t(LN3), t(0.0), 0.5).item() == pytest.approx(math.log(4 / 3) + LN2 / 2)
    assert losses.gan_int_generator_loss(t(LN3), t(0.0), 0.0).item() == pytest.approx(math.log(4 / 3))


def test_interpolate_text_embeddings():
    first, second = t(1.0, 3.0), t(3.0, -1.0)
    assert losses.interpolate_text_embeddings(first, second, 0.5).tolist() == [2.0, 1.0]
    assert losses.interpolate_text_embeddings(first, second, 1.0).tolist() == [1.0, 3.0]


# -- mismatching captions -------------------------------------------------------------------------

def test_mismatch_prefers_another_class_then_another_caption():
    tokens = captions.tokenize(["a thin one", "a thin one", "a thick one", "a thin two"])
    for seed in range(20):
        torch.manual_seed(seed)
        wrong = mismatched_indices(tokens, torch.tensor([1, 1, 1, 2]))
        assert wrong[:3].tolist() == [3, 3, 3]  # the only other class
        assert wrong[3].item() in (0, 1, 2)
    same_class = torch.tensor([1, 1, 1, 1])
    for seed in range(20):
        torch.manual_seed(seed)
        wrong = mismatched_indices(tokens, same_class)
        assert wrong[0].item() in (2, 3) and wrong[2].item() != 2  # another caption, never itself


def test_mismatch_of_identical_captions_is_another_row():
    tokens = captions.tokenize(["a one"] * 3)
    wrong = mismatched_indices(tokens, torch.tensor([1, 1, 1]))
    assert all(wrong[i].item() != i for i in range(3))


def test_mismatched_captions_of_a_batch_differ_from_the_matching_ones():
    torch.manual_seed(0)
    images = torch.rand(32, 1, 28, 28) * 2 - 1
    labels = torch.arange(32) % 10
    tokens = captions.caption_tokens(images, labels)
    wrong = mismatched_indices(tokens, labels)
    assert (tokens[wrong] != tokens).any(dim=1).all()
    assert (labels[wrong] != labels).all()
    assert captions.class_of_tokens(tokens[wrong]).ne(labels).all()


# -- which pairs D and G see ----------------------------------------------------------------------

class RecordingDiscriminator(nn.Module):
    """Returns zero logits and remembers every (image, text) pair it was shown."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, text):
        self.calls.append((images.clone(), text.clone()))
        return images.flatten(1).sum(1) * 0


class ClassEncoder(nn.Module):
    """h = the class the caption names, and a number per caption, so pairs can be told apart."""

    def forward(self, tokens):
        return torch.stack([captions.class_of_tokens(tokens).float(), tokens.float().sum(1)], dim=1)


class ConstantGenerator(nn.Module):
    def forward(self, z, text):
        return torch.full((z.size(0), 1, 8, 8), -0.5)


def recorded_nets():
    return {"G": ConstantGenerator(), "D": RecordingDiscriminator(), "text_encoder": ClassEncoder()}


def real_batch(n=6):
    torch.manual_seed(3)
    return ImageBatch(torch.rand(n, 1, 8, 8) * 2 - 1, torch.arange(n) % 3)


def test_discriminator_sees_real_matching_real_mismatching_and_fake_matching():
    family, nets, batch = tiny(), recorded_nets(), real_batch()
    loss, logs = family.discriminator_loss(batch, nets)
    assert loss.item() == pytest.approx(LN2 + 0.5 * (LN2 + LN2))  # zero logits in all three terms
    (real, h_real), (mismatched, h_wrong), (fake, h_fake) = nets["D"].calls
    text = nets["text_encoder"](captions.caption_tokens(batch.images, batch.labels))
    assert torch.equal(real, batch.images) and torch.equal(h_real, text)
    assert torch.equal(mismatched, batch.images) and (h_wrong[:, 0] != batch.labels.float()).all()
    assert torch.equal(fake, torch.full_like(fake, -0.5)) and torch.equal(h_fake, text)
    assert set(logs) == {"d_loss", "d_real", "d_mismatched", "d_fake"}


def test_generator_is_trained_on_matching_and_on_interpolated_text():
    family, nets, batch = tiny(), recorded_nets(), real_batch()
    loss, logs = family.generator_loss(batch, nets)
    assert loss.item() == pytest.approx(LN2 + 1.0 * LN2)
    (_, h_matching), (_, h_interpolated) = nets["D"].calls
    text = nets["text_encoder"](captions.caption_tokens(batch.images, batch.labels))
    assert torch.equal(h_matching, text)
    # beta = 0.5: each interpolated class value is the mean of this row's class and another class
    halves = 2 * h_interpolated[:, 0] - text[:, 0]
    assert all(value in (0.0, 1.0, 2.0) and value != label
               for value, label in zip(halves.tolist(), batch.labels.tolist()))
    assert logs["g_matching"] == pytest.approx(LN2) and logs["g_interpolated"] == pytest.approx(LN2)


def test_text_encoder_learns_in_the_d_phase_only():
    phases = {p.name: p.modules for p in tiny().phases()}
    assert phases == {"D": ("D", "text_encoder"), "G": ("G",)}


def test_unlabelled_batches_are_captioned_as_digits():
    family = tiny()
    loss, _ = family.discriminator_loss(ImageBatch(real_batch().images, None), dict(family.nets.items()))
    assert torch.isfinite(loss)


# -- the text encoder, generate, check_spec -------------------------------------------------------

def test_text_encoder_ignores_padding_and_reads_every_word():
    torch.manual_seed(0)
    encoder = TextEncoder(len(captions.VOCABULARY), 4, 6)
    tokens = captions.tokenize(["a thin two leaning left", "a thick two leaning left", "a seven"])
    h = encoder(tokens)
    assert torch.allclose(encoder(tokens[:, :5]), h)  # fewer PAD columns, same embedding
    assert not torch.allclose(h[0], h[1])  # the second word reaches h despite three words after it


def test_generate_takes_labels_captions_or_tokens():
    family = tiny()
    family.nets.eval()
    for condition in (torch.tensor([0, 1, 2, 0]), ["a thin two"] * 4, captions.tokenize(["a one"] * 4)):
        images = family.generate(4, condition)
        assert images.shape == (4, 1, 8, 8) and images.abs().max() <= 1
    torch.manual_seed(5)
    by_text = family.generate(2, ["a thick two leaning right", "a thin one"])
    torch.manual_seed(5)
    by_tokens = family.generate(2, captions.tokenize(["a thick two leaning right", "a thin one"]))
    assert torch.equal(by_text, by_tokens)


def test_sample_conditions_are_balanced_class_labels():
    assert tiny().sample_conditions(7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_captions_of_untrained_classes_and_unknown_words_are_refused():
    family = tiny()
    with pytest.raises(DataError, match="'nine' is class 9; this model was trained on 3 classes"):
        family.generate(1, ["a thin nine"])
    with pytest.raises(DataError, match="unknown word 'twelve'"):
        family.generate(1, ["a thin twelve"])
    with pytest.raises(DataError, match="2 conditions for 3 images"):
        family.generate(3, ["a one", "a two"])


@pytest.mark.parametrize("classes, message", [
    (0, "family gan_t2i is text-conditional .* needs labelled data with at least 2 classes; the data has 0"),
    (11, "class words for 10 classes; the data has 11"),
])
def test_check_spec_refuses_data_it_cannot_caption(classes, message):
    with pytest.raises(ConfigError, match=message):
        build_family("gan_t2i", DataSpec(1, 8, classes), get_family("gan_t2i").tiny)


def test_task_metrics_are_attribute_agreements():
    family = tiny()
    family.nets.eval()
    metrics = family.task_metrics(None)
    assert set(metrics) == {"text_thickness_accuracy", "text_slant_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


# -- export ---------------------------------------------------------------------------------------

def test_exported_generator_takes_latents_and_token_ids():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    assert (exported.latent_dim, exported.num_classes, exported.text_length) == (8, 0, captions.MAX_WORDS)
    z = torch.randn(2, 8)
    tokens = captions.tokenize(["a thin two", "a thick one leaning right"])
    with torch.no_grad():
        expected = family.nets["G"](z, family.nets["text_encoder"](tokens))
        assert torch.equal(exported(exported.inputs(z, tokens)), expected)
    example = exported.example_inputs(5)
    assert example.shape == (5, 8 + captions.MAX_WORDS)
    assert captions.detokenize(example[:, 8:].long())[:2] == ["a thin zero leaning left", "a thin one leaning left"]


def test_exported_generator_survives_mlflow_pt2_round_trip(tmp_path):
    mlflow_pytorch = pytest.importorskip("mlflow.pytorch")
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    example = exported.example_inputs(4)
    mlflow_pytorch.save_model(exported, str(tmp_path / "model"), input_example=example.numpy(),
                              serialization_format="pt2", pip_requirements=["torch"])
    loaded = mlflow_pytorch.load_model(str(tmp_path / "model"))
    for n in (1, 3):  # the registry checks every batch size works
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            assert torch.allclose(loaded(inputs), exported(inputs), atol=1e-5)


# -- evaluation -----------------------------------------------------------------------------------

def test_evaluate_checkpoint_scores_a_text_conditional_family(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 3
    images = rng.integers(0, 60, (400, 1, 8, 8)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[0, :, 2 * label:2 * label + 3] += 180  # the class is where a vertical stroke is
    write_prepared(RawImages(images, labels, ["a", "b", "c"], "test"), tmp_path / "prepared")
    prepared = load_prepared(tmp_path / "prepared")
    family = tiny()
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    cfg = EvaluationConfig(num_samples=40, batch_size=64, kid_subsets=5, kid_subset_size=20, nearest_k=3,
                           fid_bootstrap=4, cache_dir=str(tmp_path / "cache"), extractor_epochs=1)
    report = evaluate_checkpoint(tmp_path / "ckpt", prepared, "v1", cfg)
    assert {"fid", "precision", "recall", "coverage", "conditional_accuracy", "text_thickness_accuracy",
            "text_slant_accuracy"} <= set(report.metrics)
    assert all(math.isfinite(v) for v in report.metrics.values())
