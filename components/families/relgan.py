"""RelGAN (Wu et al., ICCV 2019): multi-domain translation driven by relative attributes.

G(x, v) edits an image by the relative attribute vector v = a' - a in
{-1, 0, +1}^A (+1 turn an attribute on, -1 off, 0 keep), broadcast as planes
beside the image: StarGAN's encoder (a full-resolution conv, two stride-2
convs), residual blocks and decoder (two transposed convs, a full-resolution
conv, tanh). v = 0 asks for no change, and G(x, alpha v) with alpha in [0, 1]
interpolates between x and G(x, v) (``interpolate``).

D is one module holding the paper's three discriminators on a shared conv
trunk h (as the paper's code does):

- D_Real(y): is y real? (patch scores on h(y)).
- D_Match(x, v, y): does the change from x to y match v? (1 x 1 convs on
  h(x), h(y) and v's planes). Real triplets (x, a' - a, x') pair a batch row
  with another row x' (a random permutation of the batch); fake triplets are
  (x, v, G(x, v)); wrong triplets (x, v_wrong, x') carry a relative vector
  that does not describe x -> x' (a wrong target, or a wrong source).
- D_Interp(y): how interpolated is y? It regresses alpha_hat = min(alpha,
  1 - alpha) from G(x, alpha v) (0: an end point, 0.5: half way) and 0 from the
  non-interpolated output nearest to it (G(x, 0) for alpha < 0.5, else
  G(x, v): the paper's modified, more stable loss); G is trained to make it
  answer 0, so interpolations look like end points.

Losses (LSGAN, as the paper), D: L_Real + l1 L_Match + l2 L_Interp;
G: L_Real + l1 L_Match + l2 L_Interp + l3 |G(G(x, v), -v) - x|_1
+ l4 |G(x, 0) - x|_1 + l5 sum_W ||W^T W - I||_F^2 over G's conv weights.
Adam, lr 5e-5, betas (0.5, 0.999); one D step then one G step.

Left out: the gradient penalty of the authors' released code (weight 150 on
D_Real between x and G(x, v)), which the paper's loss does not have; the
wrong triplets that replace an image (x or x' by a third image), kept to the
two that replace the relative vector, which need no third image and are wrong
in every row by construction; switchable normalisation (instance norm here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)

# --- the method's pure functions ------------------------------------------------------------------


@dataclass(frozen=True)
class RelativeTriplets:
    """What D_Match sees for a batch: each row x paired with the row x' = images[partners].

    ``relative`` is v = a' - a (the real triplet (x, v, x') and the fake one
    (x, v, G(x, v))); ``wrong_target`` and ``wrong_source`` are relative
    vectors that differ from v in every row, so (x, v_wrong, x') is wrong.
    """

    partners: Tensor  # int64 N
    relative: Tensor  # N x A, in {-1, 0, 1}
    wrong_target: Tensor  # (another target) - a
    wrong_source: Tensor  # a' - (another source)


def flip_one_attribute(attributes: Tensor, index: Tensor) -> Tensor:
    """``attributes`` (N x A, 0/1) with attribute ``index[i]`` of row i switched."""
    flipped = attributes.clone()
    rows = torch.arange(attributes.size(0), device=attributes.device)
    flipped[rows, index] = 1 - flipped[rows, index]
    return flipped


def different_attributes(candidates: Tensor, reference: Tensor, flip_index: Tensor, known: Tensor) -> Tensor:
    """``candidates`` where a row differs from ``reference``'s on a ``known`` attribute, else ``reference`` with
    attribute ``flip_index`` flipped: every row differs from ``reference``'s (where ``flip_index`` is known)."""
    same = ((candidates - reference) * known == 0).all(dim=1, keepdim=True)
    return torch.where(same, flip_one_attribute(reference, flip_index), candidates)


def relative_triplets(attributes: Tensor, partners: Tensor, others: Tensor, flip_index: Tensor,
                      known: Tensor | None = None) -> RelativeTriplets:
    """The triplets of a batch given the random choices: partner rows (x'), other rows, attributes to flip.

    v = a' - a with a' = attributes[partners]. The wrong target is the
    attributes of row ``others[i]`` (or a' with attribute ``flip_index[i]``
    flipped where those equal a'), the wrong source likewise against a; each
    gives a relative vector != v in every row. ``known`` (the attribute mask)
    zeroes the vectors where either image's dataset does not define the
    attribute (no change is asked there); ``flip_index`` should then be known
    to both rows (``sample_relative_triplets`` draws it so).
    """
    both = torch.ones_like(attributes) if known is None else known * known[partners]
    target, candidates = attributes[partners], attributes[others]
    wrong_target = different_attributes(candidates, target, flip_index, both)
    wrong_source = different_attributes(candidates, attributes, flip_index, both)
    return RelativeTriplets(partners, (target - attributes) * both, (wrong_target - attributes) * both,
                            (target - wrong_source) * both)


def sample_relative_triplets(attributes: Tensor, known: Tensor | None = None) -> RelativeTriplets:
    """Triplets for a batch: partners a random permutation of its rows, the wrong vectors' rows another one,
    the attribute to flip one both images define (any, for rows of datasets with none in common)."""
    n, device = attributes.size(0), attributes.device
    partners, others = torch.randperm(n, device=device), torch.randperm(n, device=device)
    both = torch.ones_like(attributes) if known is None else known * known[partners]
    flip_index = torch.multinomial(both + 1e-6, 1).squeeze(1)
    return relative_triplets(attributes, partners, others, flip_index, known)


def interpolation_target(alpha: Tensor) -> Tensor:
    """alpha_hat = min(alpha, 1 - alpha), the distance to the nearest end point: D_Interp sees one image, so
    it cannot know which end (x or G(x, v)) an interpolation started from, only how far it is from both."""
    return torch.minimum(alpha, 1 - alpha)


def interpolation_discriminator_loss(interpolated_scores: Tensor, endpoint_scores: Tensor, alpha: Tensor) -> Tensor:
    """E[(D_Interp(G(x, alpha v)) - alpha_hat)^2] + E[D_Interp(end point)^2] (the paper's modified L_Interp^D).

    ``endpoint_scores`` are D_Interp's on the non-interpolated output nearest
    the interpolation (G(x, 0) where alpha < 0.5, else G(x, v)).
    """
    return ((interpolated_scores - interpolation_target(alpha)) ** 2).mean() + (endpoint_scores ** 2).mean()


def interpolation_generator_loss(interpolated_scores: Tensor) -> Tensor:
    """E[D_Interp(G(x, alpha v))^2]: G wants its interpolations judged not interpolated."""
    return (interpolated_scores ** 2).mean()


def relgan_discriminator_adversarial(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_Real^D = E[(D(x) - 1)^2] + E[D(G(x, v))^2]; LSGAN's 1/2 undone to keep the paper's weights' balance."""
    return 2 * losses.least_squares_discriminator_loss(real_scores, fake_scores)


def relgan_generator_adversarial(fake_scores: Tensor) -> Tensor:
    """E[(D(G(x, v)) - 1)^2] (L_Real^G, and L_Match^G on the fake triplets)."""
    return 2 * losses.least_squares_generator_loss(fake_scores)


def match_discriminator_loss(real_scores: Tensor, fake_scores: Tensor, wrong_scores: Tensor) -> Tensor:
    """L_Match^D = E[(D(x, v, x') - 1)^2] + E[D(x, v, G(x, v))^2] + E[D(x, v_wrong, x')^2]."""
    return relgan_discriminator_adversarial(real_scores, fake_scores) + (wrong_scores ** 2).mean()


def cycle_reconstruction_loss(cycled: Tensor, images: Tensor) -> Tensor:
    """L_Cycle = E|G(G(x, v), -v) - x|_1 (pixel mean)."""
    return losses.l1_reconstruction_loss(cycled, images)


def self_reconstruction_loss(unchanged: Tensor, images: Tensor) -> Tensor:
    """L_Self = E|G(x, 0) - x|_1: v = 0 asks G for the image itself."""
    return losses.l1_reconstruction_loss(unchanged, images)


def orthogonal_regularizer(weights: Iterable[Tensor]) -> Tensor:
    """L_Ortho = sum_W ||W^T W - I||_F^2, each weight as a matrix of a row per output (out x in*k*k).

    The smaller Gram matrix (W W^T when W is wide) is used: both have the
    same nonzero eigenvalues, so the two losses differ by a constant (the
    size difference) and have the same gradient, and the small one is cheap.
    """
    total = None
    for weight in weights:
        matrix = weight.flatten(1)
        gram = matrix @ matrix.t() if matrix.size(0) <= matrix.size(1) else matrix.t() @ matrix
        term = (gram - torch.eye(gram.size(0), device=gram.device, dtype=gram.dtype)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("orthogonal_regularizer: no weights")
    return total


def attribute_planes(relative: Tensor, height: int, width: int) -> Tensor:
    """N x A relative attributes -> N x A x H x W constant planes."""
    return relative[:, :, None, None].expand(-1, -1, height, width)


# --- networks -------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.InstanceNorm2d(channels, affine=True),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def conv_norm_relu(cin: int, cout: int, kernel: int, stride: int, padding: int, transposed: bool = False) -> nn.Module:
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(cin, cout, kernel, stride, padding)
    return nn.Sequential(conv, nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


class RelativeGenerator(nn.Module):
    """G(x, v): image and relative-attribute planes in, edited image in [-1, 1] out (any size divisible by 4)."""

    def __init__(self, channels: int, num_attributes: int, width: int, res_blocks: int, edge_kernel: int):
        super().__init__()
        self.channels, self.num_attributes = channels, num_attributes
        pad = edge_kernel // 2
        self.net = nn.Sequential(
            conv_norm_relu(channels + num_attributes, width, edge_kernel, 1, pad),
            conv_norm_relu(width, 2 * width, 4, 2, 1), conv_norm_relu(2 * width, 4 * width, 4, 2, 1),
            *[ResidualBlock(4 * width) for _ in range(res_blocks)],
            conv_norm_relu(4 * width, 2 * width, 4, 2, 1, transposed=True),
            conv_norm_relu(2 * width, width, 4, 2, 1, transposed=True),
            nn.Conv2d(width, channels, edge_kernel, 1, pad), nn.Tanh())

    def forward(self, images: Tensor, relative: Tensor) -> Tensor:
        return self.translate(torch.cat([images, attribute_planes(relative, images.size(2), images.size(3))], 1))

    def translate(self, inputs: Tensor) -> Tensor:
        """G on the image and v's planes already stacked (N x (C + A) x H x W): the export's input."""
        return self.net(inputs)

    def conv_weights(self) -> list[Tensor]:
        """The kernels L_Ortho regularises: every conv and transposed conv of G."""
        return [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def trunk_depth(image_size: int) -> int:
    """Stride-2 layers from the image down to a 2 x 2 map (the paper's trunk ends at 4 x 4 from 256 px)."""
    depth, size = 0, image_size
    while size > 2:
        size, depth = size // 2, depth + 1
    return depth


class RelativeDiscriminator(nn.Module):
    """D_Real, D_Match and D_Interp on one shared conv trunk, scored in one forward (one DDP call per phase).

    ``forward(images, triplets, relative)`` runs the trunk once on all
    ``images`` (M of them) and gives (D_Real patch scores M x 1 x s x s,
    D_Interp scores M, D_Match scores K x 1 x s x s) where the K triplets are
    rows (source, target) of ``triplets`` (K x 2 indices into ``images``) with
    relative vectors ``relative`` (K x A).
    """

    def __init__(self, channels: int, num_attributes: int, image_size: int, width: int, max_width: int,
                 match_hidden: int, interp_channels: int):
        super().__init__()
        blocks: list[nn.Module] = []
        cin, cout = channels, width
        for _ in range(trunk_depth(image_size)):
            blocks += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.01)]
            cin, cout = cout, min(2 * cout, max_width)
        self.trunk = nn.Sequential(*blocks)
        self.real_head = nn.Conv2d(cin, 1, 1)
        self.interp_head = nn.Conv2d(cin, interp_channels, 1)  # averaged over channels and positions
        self.match_head = nn.Sequential(nn.Conv2d(2 * cin + num_attributes, match_hidden, 1), nn.LeakyReLU(0.01),
                                        nn.Conv2d(match_hidden, 1, 1))

    def forward(self, images: Tensor, triplets: Tensor, relative: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.trunk(images)
        pairs = torch.cat([features[triplets[:, 0]], features[triplets[:, 1]],
                           attribute_planes(relative, features.size(2), features.size(3))], dim=1)
        return self.real_head(features), self.interp_head(features).mean(dim=(1, 2, 3)), self.match_head(pairs)


class PlaneTranslator(nn.Module):
    """The export's translator: G on (image, v planes) stacked as one tensor."""

    def __init__(self, generator: RelativeGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, inputs: Tensor) -> Tensor:
        return self.generator.translate(inputs)


class RelGANExport(TranslationExport):
    """The registry's RelGAN: inputs N x (C + A) x H x W, a source image in [-1, 1] then the relative
    attributes v = target - source as constant planes."""

    def __init__(self, generator: RelativeGenerator, image_size: int):
        super().__init__(PlaneTranslator(generator),
                         (generator.channels + generator.num_attributes, image_size, image_size),
                         "image_and_relative_attributes")
        self.channels = generator.channels

    def inputs(self, images: Tensor, relative: Tensor) -> Tensor:
        """The export's input tensor of source images and relative attribute vectors."""
        return torch.cat([images, attribute_planes(relative, images.size(2), images.size(3))], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images beside random relative attributes in {-1, 0, 1}."""
        g = torch.Generator().manual_seed(seed)
        planes, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        relative = torch.randint(3, (n, planes - self.channels), generator=g).float() - 1
        return self.inputs(images, relative)


# --- the family -----------------------------------------------------------------------------------


@dataclass
class RelGANConfig:
    # G: the paper's (StarGAN's) 64 wide (64, 128, 256 channels) with 6 residual blocks at 256 px; 8 wide
    # (8, 16, 32 at 32 px) here. RelGAN runs G on 2.5 N images without gradients in D's phase and on 4 N with
    # them in G's (x -> v, 0, alpha v, and the cycle back), 2.5 times StarGAN's load, so G is halved in width
    # and its full-resolution convs, which dominate its time, are 3 x 3: the paper's 7 x 7 spans 3% of a
    # 256 px side, a 3 x 3 already 9% of 32 px. The residual blocks at 8 x 8 are cheap: the paper's 6 kept
    g_width: int = 8
    g_res_blocks: int = 6
    g_edge_kernel: int = 3  # the first and last convs
    # D: the paper's trunk doubles 64 -> 2048 over six stride-2 layers (256 px -> 4 x 4); here it halves the
    # image to 2 x 2 (four layers at 32 px), 16 -> 128 wide. D_Match's hidden 1 x 1 conv (paper: 2048) is
    # scaled with it; D_Interp's channels are the released PyTorch code's 16
    d_width: int = 16
    d_max_width: int = 128
    match_hidden: int = 128
    interp_channels: int = 16
    # lambda_1 .. lambda_5 of the full losses. The authors' released code weighs both reconstructions 10 and
    # L_Ortho 1e-6 (its PyTorch config); L_Interp 10 (its Keras code) and L_Match 1 (unweighted)
    lambda_match: float = 1.0
    lambda_interp: float = 10.0
    lambda_cycle: float = 10.0
    lambda_self: float = 10.0
    lambda_ortho: float = 1e-6
    lr: float = 5e-5
    beta1: float = 0.5
    beta2: float = 0.999


@register
class RelGAN(Family):
    name = "relgan"
    task = TaskKind.MULTI_DOMAIN_TRANSLATION
    paper = ("Wu et al., RelGAN: Multi-Domain Image-to-Image Translation via Relative Attributes, ICCV 2019 "
             "(arXiv:1908.07269)")
    Config = RelGANConfig
    tiny = {"g_width": 4, "g_res_blocks": 1, "g_edge_kernel": 3, "d_width": 4, "d_max_width": 8,
            "match_hidden": 8, "interp_channels": 4}

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        super().check_spec(spec)
        if spec.num_attributes < 1:
            raise ConfigError(f"family {cls.name} edits images by relative attributes and needs data with "
                              "attributes (data.source: digit_domains or attributes:folder:PATH); the data has "
                              f"{spec.num_domains} domains and no attributes")
        if spec.image_size % 4 or spec.image_size < 8:
            raise ConfigError(f"family {cls.name}: G halves the image twice and D needs at least 8 px; "
                              f"image_size {spec.image_size} is not a multiple of 4 of at least 8")

    @property
    def conditions_on_attributes(self) -> bool:
        return True

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        if cfg.g_edge_kernel % 2 == 0:
            raise ConfigError(f"family {self.name}: g_edge_kernel must be odd to keep the image size; "
                              f"got {cfg.g_edge_kernel}")
        generator = RelativeGenerator(spec.channels, spec.num_attributes, cfg.g_width, cfg.g_res_blocks,
                                      cfg.g_edge_kernel)
        discriminator = RelativeDiscriminator(spec.channels, spec.num_attributes, spec.image_size, cfg.d_width,
                                              cfg.d_max_width, cfg.match_hidden, cfg.interp_channels)
        # PyTorch's default initialisation: the authors' code's He-normal (which they call unimportant) left
        # G's self-reconstruction L1 at 0.46 after 150 Adam steps (lr 3e-4) on digit_domains, the default at 0.28
        return {"G": generator, "D": discriminator}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        # G draws its own triplets and alphas on D's batch
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    @staticmethod
    def batch_attributes(batch: ImageBatch) -> tuple[Tensor, Tensor | None]:
        if batch.attributes is None:
            raise DataError("relgan: the batch has no attributes (RelGAN trains on attribute-labelled data)")
        known = batch.attribute_mask
        return batch.attributes.float(), None if known is None or bool(known.all()) else known.float()

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        images, cfg = batch.images, self.config
        n = images.size(0)
        triplets = sample_relative_triplets(*self.batch_attributes(batch))
        alpha = torch.rand(n, device=images.device)
        v = triplets.relative
        near_start = alpha < 0.5  # rows whose nearest end point is G(x, 0); the others' is G(x, v)
        with torch.no_grad():
            outputs = nets["G"](torch.cat([images, images, images[near_start]]),
                                torch.cat([v, alpha[:, None] * v, torch.zeros_like(v[near_start])]))
        # D's images: x (x' is a row of it), G(x, v), G(x, alpha v), then G(x, 0) of the rows near x
        rows = torch.arange(n, device=images.device)
        real_pairs, fake_pairs = torch.stack([rows, triplets.partners], 1), torch.stack([rows, n + rows], 1)
        pairs = torch.cat([real_pairs, fake_pairs, real_pairs, real_pairs])
        relative = torch.cat([v, v, triplets.wrong_target, triplets.wrong_source])
        real_scores, interp_scores, match_scores = nets["D"](torch.cat([images, outputs]), pairs, relative)
        adversarial = relgan_discriminator_adversarial(real_scores[:n], real_scores[n:2 * n])
        match = match_discriminator_loss(match_scores[:n], match_scores[n:2 * n], match_scores[2 * n:])
        endpoints = torch.cat([interp_scores[3 * n:], interp_scores[n:2 * n][~near_start]])
        interp = interpolation_discriminator_loss(interp_scores[2 * n:3 * n], endpoints, alpha)
        loss = adversarial + cfg.lambda_match * match + cfg.lambda_interp * interp
        return loss, {"d_loss": loss.item(), "d_real": adversarial.item(), "d_match": match.item(),
                      "d_interp": interp.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        images, cfg = batch.images, self.config
        n = images.size(0)
        triplets = sample_relative_triplets(*self.batch_attributes(batch))
        alpha = torch.rand(n, 1, device=images.device)
        v = triplets.relative
        outputs = nets["G"](images.repeat(3, 1, 1, 1), torch.cat([v, torch.zeros_like(v), alpha * v]))
        translated, unchanged, interpolated = outputs[:n], outputs[n:2 * n], outputs[2 * n:]
        cycled = nets["G"](translated, -v)
        rows = torch.arange(n, device=images.device)
        real_scores, interp_scores, match_scores = nets["D"](torch.cat([images, translated, interpolated]),
                                                             torch.stack([rows, n + rows], 1), v)
        adversarial = relgan_generator_adversarial(real_scores[n:2 * n])
        match = relgan_generator_adversarial(match_scores)
        interp = interpolation_generator_loss(interp_scores[2 * n:])
        cycle = cycle_reconstruction_loss(cycled, images)
        self_rec = self_reconstruction_loss(unchanged, images)
        ortho = orthogonal_regularizer(unwrap(nets["G"]).conv_weights())
        loss = (adversarial + cfg.lambda_match * match + cfg.lambda_interp * interp + cfg.lambda_cycle * cycle
                + cfg.lambda_self * self_rec + cfg.lambda_ortho * ortho)
        return loss, {"g_loss": loss.item(), "g_real": adversarial.item(), "g_match": match.item(),
                      "g_interp": interp.item(), "g_cycle": cycle.item(), "g_self": self_rec.item(),
                      "g_ortho": ortho.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """Each source image edited by v = condition.target - condition.source (attribute vectors)."""
        if not isinstance(condition, DomainCondition):
            raise DataError(f"family {self.name} translates source images: generate needs a DomainCondition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        if not condition.source.is_floating_point() or condition.source.dim() != 2:
            raise DataError(f"family {self.name} conditions on attribute vectors (N x A floats), not domain indices")
        relative = (condition.target - condition.source).float()
        return self.interpolate(condition.images, relative, 1.0)

    @torch.no_grad()
    def interpolate(self, images: Tensor, relative: Tensor, alpha: float | Tensor) -> Tensor:
        """G(x, alpha v): alpha 0 keeps the image, 1 applies the whole change v; alpha a number or one per row."""
        device = self.device
        alpha = torch.as_tensor(alpha, dtype=torch.float32, device=device)
        relative = relative.to(device).float()
        scale = alpha.view(-1, 1) if alpha.dim() else alpha
        return self.nets["G"](images.to(device), scale * relative)

    def export_generator(self) -> RelGANExport:
        return RelGANExport(self.nets["G"], self.spec.image_size)
