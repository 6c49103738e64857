"""GAN-CLS + GAN-INT (Reed et al., 2016): images from captions, with a matching-aware discriminator.

Text: each training image's caption is written from its label and measured
attributes (``components/data/captions.py``: "a thick seven leaning right"),
the same at every step. A text encoder phi (word embeddings and a GRU, its
states averaged over the caption's words; no downloaded language model)
turns it into h.

G(z, h): h compressed by a fully connected layer (batch norm, leaky ReLU; 32-d
here, the paper's 128: see the config) joins z as the input of a DCGAN generator. D(x, h): a DCGAN
discriminator's convolutions bring x down to its base map (4 x 4 at 32 px,
7 x 7 at 28 px), h compressed by its own fully connected layer and leaky ReLU
is replicated over that map and joined depth-wise, then a 1 x 1 convolution
(batch norm, leaky ReLU) and a base-sized convolution give one logit.

GAN-CLS: D sees three kinds of pairs: a real image with its caption (real), a
real image with a mismatching caption, and a generated image with the caption
it was made from (both fake). D maximises
log D(x, h) + (log(1 - D(x, h_wrong)) + log(1 - D(G(z, h), h))) / 2.
The mismatching caption of image i is that of another image of the batch whose
caption differs, of another class when the batch has one.

GAN-INT: G is also trained on h_int = beta h1 + (1 - beta) h2 (beta = 0.5)
between two of the batch's captions (a mismatching pair, so the two differ),
for which no real image exists; only G's loss has that term.

The text encoder is trained jointly with D, through D's whole matching-aware
loss (it is among the D phase's modules and frozen in the G phase): the paper
pre-trains its char-CNN-RNN with a joint image-text embedding, and D's
matching decision is the training signal that plays that role here. Training
phi with G's loss would let G and phi agree on embeddings that are easy to
draw rather than ones that describe the image.

Paper hyperparameters: Adam, lr 2e-4, beta1 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from components import losses
from components.data import captions
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, Family, ImageBatch, LossResult, Networks, Phase, RealSplit,
                                      TaskKind)
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init, spatial_plan

ATTRIBUTE_SAMPLES_PER_PAIR = 10  # task_metrics: images per class and (thickness, slant) pair


@dataclass
class GANT2IConfig:
    z_dim: int = 100
    word_dim: int = 32  # word embedding size
    text_dim: int = 128  # phi(t): the GRU's hidden size (the paper's char-CNN-RNN gives 1024)
    # phi(t) compressed, in G and in D. The paper's 128 (beside a 100-d z) suits CUB's free-form captions;
    # these come from 160 templates, and at 128 G let the caption alone decide the image. Pixel std across
    # z of generate(32, [caption] * 32), mean of five captions, after 300 steps on mnist5k in one process
    # (batch 64, the phases run by components.training.loop.run_iteration): 0.05 at 128, 0.14 at 32 (0.17
    # after 800 steps, when a pixel logistic regression finds the asked class in 61%), 0.22 at 16 (26%);
    # real images sharing a caption: 0.23.
    text_proj_dim: int = 32
    g_width: int = 32  # as DCGAN's configs here: channels of G's last hidden layer, doubling toward z
    d_width: int = 32
    interpolation_beta: float = 0.5  # GAN-INT's beta
    interpolation_weight: float = 1.0  # weight of G's interpolated-text term; 0 is GAN-CLS alone
    lr: float = 2e-4
    beta1: float = 0.5


class TextEncoder(nn.Module):
    """Token ids N x L (PAD after the caption) -> N x text_dim: the mean of a GRU's states over the words.

    Averaging the states of every word, not keeping the last, lets each word
    (the class word comes before the slant phrase) reach h from the first
    step. The GRU cell is unrolled over the fixed length with PAD positions
    masked, so one graph serves every caption length and exports without packing.
    """

    def __init__(self, vocabulary_size: int, word_dim: int, text_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocabulary_size, word_dim, padding_idx=captions.PAD)
        self.cell = nn.GRUCell(word_dim, text_dim)
        self.text_dim = text_dim

    def forward(self, tokens: Tensor) -> Tensor:
        words = self.embed(tokens)
        present = (tokens != captions.PAD).unsqueeze(2).to(words.dtype)  # N x L x 1
        state = words.new_zeros(tokens.size(0), self.text_dim)
        total = torch.zeros_like(state)
        for position in range(tokens.size(1)):
            state = self.cell(words[:, position], state)
            total = total + present[:, position] * state
        return total / present.sum(dim=1).clamp(min=1)


def text_projection(text_dim: int, out_dim: int) -> nn.Module:
    """The paper's compression of phi(t): a fully connected layer and leaky ReLU."""
    return nn.Sequential(nn.Linear(text_dim, out_dim), nn.LeakyReLU(0.2, True))


class TextConditionedGenerator(nn.Module):
    """G(z, h): the DCGAN generator fed z joined with the compressed text embedding.

    The compression is batch-normalised (DCGAN's rule of batch norm in G's
    layers): phi is trained alongside, its scale drifts, and without the norm
    G's compression layer can grow the text's share of G's input until z is
    ignored and each caption gets one image. Measured on mnist5k (one
    process, batch 64; the pixel std across z of 64 images asking for a
    "three"): without the norm it fell from 0.11 to 0.04 in 200 steps, with it
    it rose to 0.20 (DCGAN: 0.30 at 200 steps).
    """

    def __init__(self, cfg: GANT2IConfig, channels: int, image_size: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(cfg.text_dim, cfg.text_proj_dim), nn.BatchNorm1d(cfg.text_proj_dim),
                                     nn.LeakyReLU(0.2, True))
        self.net = DCGANGenerator(cfg.z_dim, channels, image_size, cfg.g_width, cond_dim=cfg.text_proj_dim)
        self.project.apply(dcgan_init)

    def forward(self, z: Tensor, text_embedding: Tensor) -> Tensor:
        return self.net(z, self.project(text_embedding))


class MatchingAwareDiscriminator(nn.Module):
    """D(x, h) -> one logit: image features at the base map joined with the replicated text."""

    def __init__(self, cfg: GANT2IConfig, channels: int, image_size: int):
        super().__init__()
        base, doublings = spatial_plan(image_size)
        feature_channels = cfg.d_width * 2 ** (doublings - 1)
        self.base = base
        self.features = DCGANDiscriminator(channels, image_size, cfg.d_width).features  # without its head
        self.project = text_projection(cfg.text_dim, cfg.text_proj_dim)
        self.joint = nn.Sequential(nn.Conv2d(feature_channels + cfg.text_proj_dim, feature_channels, 1, bias=False),
                                   nn.BatchNorm2d(feature_channels), nn.LeakyReLU(0.2, True))
        self.head = nn.Conv2d(feature_channels, 1, base)
        for module in (self.project, self.joint, self.head):
            module.apply(dcgan_init)

    def forward(self, images: Tensor, text_embedding: Tensor) -> Tensor:
        features = self.features(images)
        text = self.project(text_embedding)[:, :, None, None].expand(-1, -1, self.base, self.base)
        return self.head(self.joint(torch.cat([features, text], dim=1))).flatten()


def mismatched_indices(tokens: Tensor, labels: Tensor | None) -> Tensor:
    """For each row i, a random other row j whose caption differs, of another class where one exists.

    Rows are ranked by 2 * (other class) + (other caption) + uniform noise, so
    j is drawn evenly among the best kind the batch offers; a batch whose
    captions are all the same has no mismatch and gets another row anyway.
    """
    n = tokens.size(0)
    different_caption = (tokens.unsqueeze(1) != tokens.unsqueeze(0)).any(dim=2).float()
    score = different_caption + torch.rand(n, n, device=tokens.device)
    if labels is not None:
        score = score + 2 * (labels.unsqueeze(1) != labels.unsqueeze(0)).float()
    if n > 1:
        score.fill_diagonal_(-1.0)
    return score.argmax(dim=1)


@register
class GANT2I(Family):
    name = "gan_t2i"
    task = TaskKind.TEXT_CONDITIONAL
    paper = ("Reed et al., Generative Adversarial Text to Image Synthesis, ICML 2016 (arXiv:1605.05396): "
             "GAN-CLS + GAN-INT")
    Config = GANT2IConfig
    tiny = {"z_dim": 8, "word_dim": 4, "text_dim": 8, "text_proj_dim": 4, "g_width": 4, "d_width": 4}

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        if spec.num_classes < 2:
            raise ConfigError(f"family {cls.name} is text-conditional and captions name each image's class: it "
                              f"needs labelled data with at least 2 classes; the data has {spec.num_classes}")
        if spec.num_classes > len(captions.CLASS_WORDS):
            raise ConfigError(f"family {cls.name} captions digits and has class words for {len(captions.CLASS_WORDS)} "
                              f"classes; the data has {spec.num_classes}")

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": TextConditionedGenerator(cfg, c, s), "D": MatchingAwareDiscriminator(cfg, c, s),
                "text_encoder": TextEncoder(len(captions.VOCABULARY), cfg.word_dim, cfg.text_dim)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999), ("G", "D", "text_encoder"))

    def phases(self) -> list[Phase]:
        # G reuses D's batch: it needs the batch's captions, not fresh images
        return [Phase("D", ("D", "text_encoder"), self.discriminator_loss),
                Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """GAN-CLS: real + matching caption is real; real + mismatching and fake + matching are fake."""
        tokens = captions.caption_tokens(batch.images, batch.labels)
        wrong = mismatched_indices(tokens, batch.labels)
        text = nets["text_encoder"](tokens)
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device), text)
        real_logits = nets["D"](batch.images, text)
        mismatched_logits = nets["D"](batch.images, text[wrong])
        fake_logits = nets["D"](fake, text)
        loss = losses.matching_aware_discriminator_loss(real_logits, mismatched_logits, fake_logits)
        return loss, {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                      "d_mismatched": torch.sigmoid(mismatched_logits).mean().item(),
                      "d_fake": torch.sigmoid(fake_logits).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """GAN-CLS's non-saturating G loss on the batch's captions, plus GAN-INT's on interpolated ones."""
        device, n, cfg = batch.images.device, len(batch), self.config
        tokens = captions.caption_tokens(batch.images, batch.labels)
        text = nets["text_encoder"](tokens)  # frozen here: phi learns through D's loss only
        interpolated = losses.interpolate_text_embeddings(text, text[mismatched_indices(tokens, batch.labels)],
                                                          cfg.interpolation_beta)
        fake_logits = nets["D"](nets["G"](self.latent(n, cfg.z_dim, device), text), text)
        interpolated_logits = nets["D"](nets["G"](self.latent(n, cfg.z_dim, device), interpolated), interpolated)
        loss = losses.gan_int_generator_loss(fake_logits, interpolated_logits, cfg.interpolation_weight)
        return loss, {"g_loss": loss.item(), "g_matching": losses.nonsaturating_generator_loss(fake_logits).item(),
                      "g_interpolated": losses.nonsaturating_generator_loss(interpolated_logits).item()}

    def sample_conditions(self, n: int) -> Tensor:
        """Balanced class labels: ``generate`` writes captions asking for them, and the evaluator's
        conditional accuracy checks that each image shows the class its caption names."""
        return torch.arange(n) % self.spec.num_classes

    def condition_tokens(self, condition: Tensor | Sequence[str] | None, n: int) -> Tensor:
        """Token rows for ``generate``: from class labels, captions (text) or token ids."""
        if condition is None:
            condition = self.sample_conditions(n)
        if isinstance(condition, str) or (isinstance(condition, Sequence) and not isinstance(condition, Tensor)):
            tokens = self.tokens_for_text(list(condition) if not isinstance(condition, str) else [condition])
        elif condition.dim() == 2:
            tokens = condition.long()
        else:
            tokens = captions.tokenize(captions.requested_captions(condition.cpu(), self.spec.num_classes))
        if tokens.size(0) != n:
            raise DataError(f"generate: {tokens.size(0)} conditions for {n} images")
        return tokens

    def tokens_for_text(self, texts: Sequence[str]) -> Tensor:
        """Token rows of captions; a class word beyond the trained classes is a one-line error."""
        tokens = captions.tokenize(texts)
        named = captions.class_of_tokens(tokens)
        highest, known = int(named.max()), captions.CLASS_WORDS[:self.spec.num_classes]
        if highest >= self.spec.num_classes:
            raise DataError(f"text: {captions.CLASS_WORDS[highest]!r} is class {highest}; this model was trained on "
                            f"{self.spec.num_classes} classes ({', '.join(known)})")
        return tokens

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | Sequence[str] | None = None) -> Tensor:
        """n images of captions: class labels (captions written for them), caption strings or token rows."""
        tokens = self.condition_tokens(condition, n).to(self.device)
        return self.nets["G"](self.latent(n, self.config.z_dim), self.nets["text_encoder"](tokens))

    @torch.no_grad()
    def task_metrics(self, real: RealSplit) -> dict[str, float]:
        """Whether generated images show the attributes their captions ask for, as captions.py measures them.

        Ten images per class and attribute pair; each attribute has three values,
        so chance is 1/3 (the evaluator's conditional accuracy covers the class word).
        """
        k = self.spec.num_classes
        labels = torch.arange(k * 9 * ATTRIBUTE_SAMPLES_PER_PAIR) % k
        thickness, slants = captions.requested_attributes(labels.numel(), k)
        tokens = captions.tokenize(captions.requested_captions(labels, k))
        images = torch.cat([self.generate(len(part), part) for part in tokens.split(500)]).clamp(-1, 1)
        thickness_hits = captions.thickness_classes(images).cpu() == thickness
        slant_hits = captions.slant_classes(images).cpu() == slants
        return {"text_thickness_accuracy": thickness_hits.float().mean().item(),
                "text_slant_accuracy": slant_hits.float().mean().item()}

    def export_generator(self) -> "TextToImageExport":
        return TextToImageExport(self.nets["text_encoder"], self.nets["G"], self.config.z_dim,
                                 self.spec.num_classes)


class TextToImageExport(nn.Module):
    """``forward(inputs)`` with inputs = [z (latent_dim) ‖ the caption's token ids as floats (MAX_WORDS)].

    One tensor in and one out, as the registry expects; the text encoder travels
    inside, so the loaded model needs only ``captions.tokenize`` (or the token
    table in ``captions.VOCABULARY``) to be asked for any caption.
    ``num_classes`` is 0: the input carries tokens, not a one-hot class block.
    """

    def __init__(self, text_encoder: nn.Module, generator: nn.Module, latent_dim: int, trained_classes: int):
        super().__init__()
        self.text_encoder, self.generator = text_encoder, generator
        self.latent_dim, self.num_classes, self.text_length = latent_dim, 0, captions.MAX_WORDS
        self.trained_classes = trained_classes

    def forward(self, inputs: Tensor) -> Tensor:
        z = inputs[:, : self.latent_dim]
        tokens = inputs[:, self.latent_dim:].round().long()
        return self.generator(z, self.text_encoder(tokens))

    def inputs(self, latents: Tensor, tokens: Tensor) -> Tensor:
        return torch.cat([latents, tokens.to(latents.dtype)], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Gaussian latents and captions of balanced classes with every attribute pair in turn."""
        z = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))
        labels = torch.arange(n) % self.trained_classes
        return self.inputs(z, captions.tokenize(captions.requested_captions(labels, self.trained_classes)))
