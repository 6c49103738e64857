"""Semi-supervised GAN (Odena, 2016; the K+1 form of Salimans et al., 2016): D is a K+1-way classifier.

D has K + 1 outputs: the K data classes and "fake". It minimises the supervised
cross-entropy on the labelled real images plus the unsupervised terms
-E[log(1 - p(fake | x))] on real images and -E[log p(fake | G(z))] on generated
ones; G minimises -E[log(1 - p(fake | G(z)))]. Architecture and optimiser are
DCGAN's, as in Odena's paper (D's last layer has K + 1 outputs instead of 1).

Which labels D may use. A fixed subset of the training rows, ``labelled_per_class``
of every class, chosen by ``components.data.prepared.labelled_subset`` with
``label_seed`` among the evaluator's train rows (never its held-out ones, so the
held-out accuracy is honest). The subset is a pure function of the versioned
prepared labels, the evaluation split and this config: the launcher computes it
once and hands the same rows to every worker, whose sampler records it in every
checkpoint, and ``task_metrics`` picks the very same images from the evaluator's
train split for the supervised baseline. As in both papers, every step has
labelled images: the sampler fills ``labelled_share`` of each batch with subset
rows (flagged in ``batch.labelled``) and withholds every other row's label. The
supervised term averages over the flagged rows only; the unsupervised real term
is E over p_data, so it uses the whole real batch, labelled rows included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.data.prepared import labelled_subset
from components.errors import ConfigError
from components.families import register
from components.families.base import DataSpec, Family, ImageBatch, LossResult, Networks, Phase, RealSplit, TaskKind
from components.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass
class SGANConfig:
    z_dim: int = 100
    g_width: int = 32
    d_width: int = 32
    labelled_per_class: int = 10  # training images per class whose labels D may learn from
    labelled_share: float = 0.25  # of every batch (each worker's): rows from the labelled subset
    label_seed: int = 0  # chooses the labelled subset
    lr: float = 2e-4
    beta1: float = 0.5
    baseline_steps: int = 300  # evaluation: full-batch steps of the supervised baseline on the labelled images

    def __post_init__(self) -> None:
        if self.labelled_per_class < 1 or self.label_seed < 0:
            raise ValueError(f"labelled_per_class must be >= 1 and label_seed >= 0, got {self.labelled_per_class} "
                             f"and {self.label_seed}")
        if not 0 < self.labelled_share < 1:
            raise ValueError(f"labelled_share must be between 0 and 1 (exclusive), got {self.labelled_share}")


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

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        return semi_supervised_d_loss(nets["D"](batch.images), nets["D"](fake), batch.labels, batch.labelled)

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
        # the evaluator's train split holds the rows training chose among, in ascending order: the same pick
        pick = torch.from_numpy(labelled_subset(real.train_labels.cpu().numpy(), self.config.labelled_per_class,
                                                self.config.label_seed))
        baseline = self.supervised_baseline(real.train_images[pick], real.train_labels[pick])
        with torch.no_grad():
            baseline_accuracy = class_accuracy(baseline(real.test_images), real.test_labels)
        return {"classifier_accuracy": accuracy, "supervised_baseline_accuracy": baseline_accuracy,
                "labelled_images": float(len(pick))}

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


def semi_supervised_d_loss(real_logits: Tensor, fake_logits: Tensor, labels: Tensor | None,
                           labelled: Tensor | None) -> LossResult:
    """D's loss from its K+1 logits: the unsupervised real/fake terms over all rows, plus the supervised
    cross-entropy over the rows flagged ``labelled`` alone (no supervision without labels or flags)."""
    unsupervised = losses.k_plus_one_real_loss(real_logits) + losses.k_plus_one_fake_loss(fake_logits)
    logs = {"d_unsup": unsupervised.item()}
    loss = unsupervised
    if labels is not None and labelled is not None:
        # indexing by the flags keeps every other row's label out of the loss, whatever it holds
        known_logits, known_labels = real_logits[labelled], labels[labelled]
        supervised = losses.k_plus_one_supervised_loss(known_logits, known_labels)
        loss = loss + supervised
        logs |= {"d_sup": supervised.item(), "labelled": float(known_labels.numel())}
        if known_labels.numel():
            logs["d_accuracy"] = class_accuracy(known_logits[:, :-1], known_labels)
    return loss, {"d_loss": loss.item(), **logs}
