"""Semi-supervised GAN (Odena, 2016; the K+1 form of Salimans et al., 2016): D is a K+1-way classifier.

D has K + 1 outputs: the K data classes and "fake". It minimises the supervised
cross-entropy on the few labelled real images plus the unsupervised terms
-E[log(1 - p(fake | x))] on real images and -E[log p(fake | G(z))] on generated
ones; G minimises -E[log(1 - p(fake | G(z)))]. Architecture and optimiser are
DCGAN's, as in Odena's paper (D's last layer has K + 1 outputs instead of 1).

Which real images count as labelled. Only ``labeled_per_class`` labels per
class may be used, but a family sees batches, never the dataset, and under
data parallelism each worker sees a different shard in a different order. Any
rule that remembers "the first labelled images seen" therefore picks a
different set on every worker and for every worker count. Instead an image is
labelled iff a fixed hash of its content (its 8-bit pixels, the form the data
is stored in) falls below ``labeled_per_class / images_per_class``; the hash is
a random linear map modulo a prime whose weights come from ``label_seed``. The
rule depends only on the image and the seed: the same images are labelled in
any batch, on any worker, for any sharding, after any resume. The price is
that the count per class is ``labeled_per_class`` in expectation, not exactly:
the exact count needs the whole dataset, which the trainer never hands a
family. ``images_per_class`` (500 for the embedded mnist5k) sets the rate.
The unsupervised real term uses the whole real batch: it is E over p_data in
both papers, labelled images included. Unlike the papers, which draw a separate
minibatch from the labelled set each step, the supervised term here averages
over the labelled images that happen to be in the batch (about 1 in 50 at the
defaults, none in many batches): noisier, but the same on every worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError
from components.families import register
from components.families.base import DataSpec, Family, ImageBatch, LossResult, Networks, Phase, RealSplit, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator

HASH_PRIME = 2_147_483_647  # 2^31 - 1: (pixel + 1) * weight summed over 2^21 pixels stays below 2^63


@dataclass
class SGANConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32
    labeled_per_class: int = 10  # labels D may learn from, per class (expected count; see module docstring)
    images_per_class: int = 500  # images per class in the data: mnist5k has 5,000 over 10 classes
    label_seed: int = 0  # chooses which images are the labelled ones
    lr: float = 2e-4
    beta1: float = 0.5
    baseline_steps: int = 300  # evaluation: full-batch steps of the supervised baseline on the labelled images

    def __post_init__(self) -> None:
        if not 0 < self.labeled_per_class <= self.images_per_class:
            raise ValueError(f"labeled_per_class must be in 1..images_per_class ({self.images_per_class}), "
                             f"got {self.labeled_per_class}")


def pixel_hash(images: Tensor, weights: Tensor) -> Tensor:
    """One value in [0, 1) per image from its 8-bit pixels; weights are int64 in [1, HASH_PRIME)."""
    pixels = ((images.flatten(1) + 1) * 127.5).round().clamp_(0, 255).long()
    # + 1 so that a black image does not hash to 0 whatever the seed
    return ((pixels + 1) * weights).sum(dim=1).remainder(HASH_PRIME).double() / HASH_PRIME


def hash_weights(pixels: int, seed: int, device: torch.device) -> Tensor:
    generator = torch.Generator().manual_seed(seed)  # on CPU, so every device draws the same weights
    return torch.randint(1, HASH_PRIME, (pixels,), generator=generator, dtype=torch.int64).to(device)


@register
class SGAN(Family):
    name = "sgan"
    task = TaskKind.UNCONDITIONAL
    paper = "Odena, Semi-Supervised Learning with Generative Adversarial Networks, 2016 (arXiv:1606.01583)"
    Config = SGANConfig
    tiny = {"z_dim": 8, "g_width": 8, "d_width": 8}

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        if spec.num_classes < 2:
            raise ConfigError(f"family {cls.name} is semi-supervised and needs labelled data with at least "
                              f"2 classes; the data has {spec.num_classes}")

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": DCGANGenerator(cfg.z_dim, c, s, cfg.g_width),
                "D": DCGANDiscriminator(c, s, cfg.d_width, out_dim=self.spec.num_classes + 1)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, 0.999))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def is_labelled(self, images: Tensor) -> Tensor:
        """Bool per image: whether its label may be used (a function of the image and label_seed only)."""
        weights = hash_weights(images[0].numel(), self.config.label_seed, images.device)
        return pixel_hash(images, weights) < self.config.labeled_per_class / self.config.images_per_class

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        real_logits, fake_logits = nets["D"](batch.images), nets["D"](fake)
        unsupervised = losses.k_plus_one_real_loss(real_logits) + losses.k_plus_one_fake_loss(fake_logits)
        logs = {"d_unsup": unsupervised.item()}
        loss = unsupervised
        if batch.labels is not None:  # unlabelled data (the contract test's batches): the GAN game alone
            labelled = self.is_labelled(batch.images)
            supervised = losses.k_plus_one_supervised_loss(real_logits[labelled], batch.labels[labelled])
            loss = loss + supervised
            predicted = real_logits[:, :-1].argmax(dim=1)
            logs |= {"d_sup": supervised.item(), "labelled": float(labelled.sum().item()),
                     "d_accuracy": (predicted == batch.labels).float().mean().item()}
        return loss, {"d_loss": loss.item(), **logs}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake_logits = nets["D"](nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device)))
        loss = losses.k_plus_one_generator_loss(fake_logits)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))

    def task_metrics(self, real: RealSplit) -> dict[str, float]:
        """D's K-way accuracy on held-out real images, beside the same network trained on the same
        labelled images alone (the paper's claim is that the GAN game makes the former higher)."""
        if real.train_labels is None or real.test_labels is None:
            return {}
        self.nets.eval()
        with torch.no_grad():
            accuracy = class_accuracy(self.nets["D"](real.test_images)[:, :-1], real.test_labels)
        labelled = self.is_labelled(real.train_images)
        baseline = self.supervised_baseline(real.train_images[labelled], real.train_labels[labelled])
        with torch.no_grad():
            baseline_accuracy = class_accuracy(baseline(real.test_images), real.test_labels)
        return {"classifier_accuracy": accuracy, "supervised_baseline_accuracy": baseline_accuracy,
                "labelled_images": float(labelled.sum().item())}

    def supervised_baseline(self, images: Tensor, labels: Tensor) -> nn.Module:
        """D's architecture with K outputs, trained by cross-entropy on ``images`` only (full batch)."""
        cfg = self.config
        network = DCGANDiscriminator(self.spec.channels, self.spec.image_size, cfg.d_width,
                                     out_dim=self.spec.num_classes)
        optimizer = torch.optim.Adam(network.parameters(), cfg.lr, betas=(cfg.beta1, 0.999))
        for _ in range(cfg.baseline_steps if len(images) else 0):
            loss = F.cross_entropy(network(images).flatten(1), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return network.eval()


def class_accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.flatten(1).argmax(dim=1) == labels).float().mean().item()
