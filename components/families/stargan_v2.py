"""StarGAN v2 (Choi et al., 2020): diverse translation between many domains with one generator.

Four networks. The generator G(x, s) encodes the image with pre-activation
residual blocks (instance norm, average-pool downsampling) to a bottleneck and
decodes it with residual blocks whose normalisation is AdaIN from the style
code s (nearest-neighbour upsampling), ending with a 1x1 convolution to RGB and
no tanh (the paper lets G learn the colour range; ``generate`` clamps). The
mapping network F(z, y) is a shared MLP with one output branch per domain; the
style encoder E(x, y) a convolutional body shared by all domains with one
linear head each; the discriminator D(x, y) the same body with one logit per
domain (multi-task: D_y judges whether x is a real image of domain y). F, E and
D compute every domain's output and pick the row's own, as the paper's code
does (every parameter is in the graph, which data-parallel training needs).

Losses. D: the non-saturating logistic loss on D_y's logit with R1 on real
images, (gamma / 2) E||grad_x D_y(x)||^2, gamma = 1. G, F and E:
L_adv + lambda_sty |s - E_y(G(x, s))| - lambda_ds |G(x, s1) - G(x, s2)|
+ lambda_cyc |x - G(G(x, s), E_y_src(x))|, all L1 means, lambda_sty = lambda_cyc = 1
and lambda_ds starting at 1 (the paper's CelebA-HQ value; 2 for AFHQ) and
decaying linearly to 0 over ``ds_decay_steps`` iterations (the paper decays it
over its whole training). The iteration count lives in G as a buffer, so a
resumed run continues the decay where it stopped.

One iteration is the paper's four steps on one real batch: D against
latent-guided fakes (s = F(z, y)), D against reference-guided fakes
(s = E(x_ref, y)), then G, F and E on the latent-guided objective, then G alone
on the reference-guided one (as in the paper's code, the reference step does
not update F or E). Targets are drawn at random per row: any domain for latent
styles; for reference styles a random row of the batch (a permutation) is the
reference and its domain the target, the second reference (for the diversity
term) another row of that domain. Adam with the paper's betas (0, 0.99) and
weight decay 1e-4, F's rate 100x below the others'; He-normal initialisation.
EMA copies of G, F and E (decay 0.999) are updated after each iteration's last
step that trains them (F and E after the latent step, G after the reference
step) and are what ``generate`` and the export use. Each EMA copy lives inside
the container of the network it shadows, its weights stored as buffers:
checkpointed with it, invisible to its optimizer and to DistributedDataParallel.

Deviations for runs of a few hundred iterations (the paper trains 100k):
learning rate 1e-3 (paper 1e-4; F 1e-5, paper 1e-6), and an EMA decay that
warms up as min(0.999, (1 + t) / (10 + t)) (``ema_warmup``); both are config
values, see there. Sizes are shrunk for 32 x 32 digits on CPUs (see the config).

Left out: the high-pass filtered skip connections and the face-landmark masks
the paper uses for CelebA-HQ (w_hpf > 0; they need a pretrained landmark
network and only help faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, DomainCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, unwrap)
from components.nets.ema import WithEMA

# --- method-specific losses and schedules ---------------------------------------------------------


def pick_domain(outputs: Tensor, domains: Tensor) -> Tensor:
    """Row i of ``outputs`` (N x D x ...) at domain ``domains[i]``: a multi-output network's branch for y."""
    return outputs[torch.arange(outputs.size(0), device=outputs.device), domains]


def stargan_v2_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_images: Tensor,
                                  r1_gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, logistic, R1): -E[log D_y(x)] - E[log(1 - D_y~(G(x, s~)))] + (gamma / 2) E||grad_x D_y(x)||^2.

    ``real_logits`` must be D's picked logits on ``real_images``, which require grad.
    """
    logistic = losses.bce_discriminator_loss(real_logits, fake_logits)
    r1 = losses.r1_penalty(real_logits, real_images)
    return logistic + 0.5 * r1_gamma * r1, logistic, r1


def style_reconstruction_loss(styles: Tensor, recovered: Tensor) -> Tensor:
    """E|s - E_y(G(x, s))|: the style encoder must read back the style G was given."""
    return (styles - recovered).abs().mean()


def diversity_sensitive_loss(first: Tensor, second: Tensor) -> Tensor:
    """E|G(x, s1) - G(x, s2)|, which G maximises; the second output is a constant, as in the paper's code."""
    return (first - second.detach()).abs().mean()


def diversity_weight(step: int | Tensor, initial: float, decay_steps: int) -> float:
    """lambda_ds at iteration ``step``: ``initial`` at 0, linearly down to 0 at ``decay_steps``, 0 after.

    The term has no optimum (the outputs can always differ more), so the paper
    lets it push diversity early on and fades it out.
    """
    return initial * max(0.0, 1.0 - float(step) / decay_steps)


def cycle_consistency_loss(images: Tensor, reconstructions: Tensor) -> Tensor:
    """E|x - G(G(x, s~), E_y(x))|: translating back with the source's own style must restore the image."""
    return (images - reconstructions).abs().mean()


def stargan_v2_generator_loss(fake_logits: Tensor, styles: Tensor, recovered_styles: Tensor, fake: Tensor,
                              second_fake: Tensor, images: Tensor, reconstructions: Tensor, lambda_sty: float,
                              lambda_ds: float, lambda_cyc: float) -> tuple[Tensor, dict[str, Tensor]]:
    """(total, terms): L_adv + lambda_sty L_sty - lambda_ds L_ds + lambda_cyc L_cyc (the paper's eq. 5)."""
    terms = {"adv": losses.nonsaturating_generator_loss(fake_logits),
             "sty": style_reconstruction_loss(styles, recovered_styles),
             "ds": diversity_sensitive_loss(fake, second_fake),
             "cyc": cycle_consistency_loss(images, reconstructions)}
    total = terms["adv"] + lambda_sty * terms["sty"] - lambda_ds * terms["ds"] + lambda_cyc * terms["cyc"]
    return total, terms


# --- networks --------------------------------------------------------------------------------------


def he_init(module: nn.Module) -> None:
    """The paper's code's initialisation: He normal (fan in) weights, zero biases, for convs and linears."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def halvings(size: int, floor: int) -> int:
    """How often ``size`` can be halved exactly while it stays above ``floor``."""
    count = 0
    while size > floor and size % 2 == 0:
        size, count = size // 2, count + 1
    return count


def lrelu(x: Tensor) -> Tensor:
    return nnf.leaky_relu(x, 0.2)


def upsample2x(x: Tensor) -> Tensor:
    return nnf.interpolate(x, scale_factor=2, mode="nearest")


class ResBlock(nn.Module):
    """Pre-activation residual block: [IN] lrelu conv3 [avgpool] [IN] lrelu conv3, plus a (1x1, pooled) shortcut.

    The sum is divided by sqrt 2 to keep unit variance, as in the paper's code.
    """

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(in_channels, affine=True) if normalize else nn.Identity()
        self.norm2 = nn.InstanceNorm2d(in_channels, affine=True) if normalize else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        x = self.conv1(lrelu(self.norm1(x)))
        if self.downsample:
            skip, x = nnf.avg_pool2d(skip, 2), nnf.avg_pool2d(x, 2)
        if self.shortcut is not None:  # after the pooling, which a 1x1 conv commutes with: 4x cheaper
            skip = self.shortcut(skip)
        x = self.conv2(lrelu(self.norm2(x)))
        return (skip + x) / math.sqrt(2)


class AdaIN(nn.Module):
    """(1 + gamma(s)) IN(x) + beta(s), gamma and beta a linear map of the style code (the paper's code's form)."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        gamma, beta = self.style(s).view(x.size(0), 2, x.size(1), 1, 1).unbind(1)
        return (1 + gamma) * self.norm(x) + beta


class AdaINResBlock(nn.Module):
    """AdaIN lrelu [upsample] conv3 AdaIN lrelu conv3, plus a ([upsampled], 1x1) shortcut; sum / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.norm1 = AdaIN(in_channels, style_dim)
        self.norm2 = AdaIN(out_channels, style_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        # the 1x1 shortcut before the upsampling, which it commutes with: 4x cheaper
        skip = x if self.shortcut is None else self.shortcut(x)
        x = lrelu(self.norm1(x, s))
        if self.upsample:
            skip, x = upsample2x(skip), upsample2x(x)
        x = self.conv2(lrelu(self.norm2(self.conv1(x), s)))
        return (skip + x) / math.sqrt(2)


class Generator(nn.Module):
    """G(x, s): 1x1 conv, IN residual blocks down to the bottleneck, AdaIN residual blocks back up, IN lrelu 1x1 conv.

    Each downsampling doubles the width (up to ``max_width``); the bottleneck
    has ``bottleneck_blocks`` plain and as many AdaIN blocks (the paper: 2).
    """

    def __init__(self, channels: int, image_size: int, style_dim: int, width: int, max_width: int,
                 bottleneck: int, bottleneck_blocks: int):
        super().__init__()
        self.from_rgb = nn.Conv2d(channels, width, 1)  # the paper's table: a 1x1 convolution (its code: 3x3)
        encoder: list[nn.Module] = []
        decoder: list[nn.Module] = []
        current = width
        for _ in range(halvings(image_size, bottleneck)):
            wider = min(2 * current, max_width)
            encoder.append(ResBlock(current, wider, normalize=True, downsample=True))
            decoder.insert(0, AdaINResBlock(wider, current, style_dim, upsample=True))
            current = wider
        for _ in range(bottleneck_blocks):
            encoder.append(ResBlock(current, current, normalize=True))
            decoder.insert(0, AdaINResBlock(current, current, style_dim))
        self.encoder, self.decoder = nn.ModuleList(encoder), nn.ModuleList(decoder)
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(width, channels, 1))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        x = self.from_rgb(x)
        for block in self.encoder:
            x = block(x)
        for block in self.decoder:
            x = block(x, s)
        return self.to_rgb(x)


class MappingNetwork(nn.Module):
    """F(z, y): ``shared_layers`` ReLU linears shared by all domains, then per domain ``branch_layers`` more,
    the last one linear to the style code."""

    def __init__(self, latent_dim: int, style_dim: int, num_domains: int, width: int, shared_layers: int,
                 branch_layers: int):
        super().__init__()
        shared: list[nn.Module] = []
        for index in range(shared_layers):
            shared += [nn.Linear(latent_dim if index == 0 else width, width), nn.ReLU()]
        self.shared = nn.Sequential(*shared)

        def branch() -> nn.Sequential:
            hidden: list[nn.Module] = []
            for _ in range(branch_layers - 1):
                hidden += [nn.Linear(width, width), nn.ReLU()]
            return nn.Sequential(*hidden, nn.Linear(width, style_dim))

        self.branches = nn.ModuleList(branch() for _ in range(num_domains))

    def forward(self, z: Tensor, domains: Tensor) -> Tensor:
        hidden = self.shared(z)
        return pick_domain(torch.stack([branch(hidden) for branch in self.branches], dim=1), domains)


class DomainBody(nn.Module):
    """The body shared by E and D: 3x3 conv, unnormalised residual blocks halving down to 4 x 4, lrelu, a conv
    over the whole remaining map, lrelu: one feature vector per image (N x width)."""

    def __init__(self, channels: int, image_size: int, width: int, max_width: int):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        current, size = width, image_size
        for _ in range(halvings(image_size, 4)):
            wider = min(2 * current, max_width)
            blocks.append(ResBlock(current, wider, downsample=True))
            current, size = wider, size // 2
        blocks += [nn.LeakyReLU(0.2), nn.Conv2d(current, current, size), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = current

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x.contiguous(memory_format=torch.channels_last)).flatten(1)


class StyleEncoder(nn.Module):
    """E(x, y): the shared body, then one linear head per domain (stored as one D x style_dim linear map)."""

    def __init__(self, channels: int, image_size: int, style_dim: int, num_domains: int, width: int,
                 max_width: int):
        super().__init__()
        self.body = DomainBody(channels, image_size, width, max_width)
        self.heads = nn.Linear(self.body.out_channels, num_domains * style_dim)
        self.num_domains, self.style_dim = num_domains, style_dim

    def forward(self, x: Tensor, domains: Tensor) -> Tensor:
        styles = self.heads(self.body(x)).view(x.size(0), self.num_domains, self.style_dim)
        return pick_domain(styles, domains)


class Discriminator(nn.Module):
    """D(x, y): the shared body, one logit per domain; returns domain y's logit (N)."""

    def __init__(self, channels: int, image_size: int, num_domains: int, width: int, max_width: int):
        super().__init__()
        self.body = DomainBody(channels, image_size, width, max_width)
        self.logits = nn.Linear(self.body.out_channels, num_domains)

    def forward(self, x: Tensor, domains: Tensor) -> Tensor:
        return pick_domain(self.logits(self.body(x)), domains)


# --- export ---------------------------------------------------------------------------------------


class StyleTranslator(nn.Module):
    """[image ‖ style planes] -> G(image, s), clamped to [-1, 1]; s is each style plane's mean."""

    def __init__(self, generator: nn.Module, channels: int):
        super().__init__()
        self.generator, self.channels = generator, channels

    def forward(self, inputs: Tensor) -> Tensor:
        images, planes = inputs[:, : self.channels], inputs[:, self.channels:]
        return self.generator(images, planes.mean(dim=(2, 3))).clamp(-1.0, 1.0)


class StarGANv2Export(TranslationExport):
    """The registry's StarGAN v2: ``condition_kind`` "image_style", C + style_dim channels (the source image,
    then the style code as constant planes), through the EMA generator.

    ``mapping`` (the EMA mapping network) only draws the example inputs' styles.
    """

    def __init__(self, generator: nn.Module, mapping: nn.Module, spec: DataSpec, latent_dim: int, style_dim: int):
        s = spec.image_size
        super().__init__(StyleTranslator(generator, spec.channels), (spec.channels + style_dim, s, s), "image_style")
        self.mapping, self.channels, self.num_domains = mapping, spec.channels, spec.num_domains
        self.style_latent_dim = latent_dim  # not ``latent_dim``: the registered model itself takes no noise

    def inputs(self, images: Tensor, styles: Tensor) -> Tensor:
        """The export's input tensor: the images, then each style code (N x style_dim) as constant planes."""
        planes = styles.view(*styles.shape, 1, 1).expand(-1, -1, images.size(2), images.size(3))
        return torch.cat([images, planes.to(images)], dim=1)

    @torch.no_grad()
    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random images in [-1, 1] with latent-guided styles F(z, y) of balanced target domains."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        images = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        z = torch.randn(n, self.style_latent_dim, generator=g)
        device = next(self.mapping.buffers()).device
        styles = self.mapping(z.to(device), (torch.arange(n) % self.num_domains).to(device))
        return self.inputs(images, styles.cpu())


# --- the family -----------------------------------------------------------------------------------


@dataclass
class StarGANv2Config:
    latent_dim: int = 16  # z, as in the paper
    # style code s: paper 64. Digit domains (colour, stroke) have far less style than faces or animals
    style_dim: int = 16
    # F: the paper's 4 shared and 4 per-domain layers, 512 wide; 64 wide here
    mapping_width: int = 64
    mapping_shared_layers: int = 4
    mapping_branch_layers: int = 4
    # G: first width, doubling per downsampling up to max_width (paper: 64 up to 512 at 256 px). The paper's
    # bottleneck is 16 x 16 at any size (4 halvings at 256 px); 8 x 8 here: two halvings of 32 px halve G's
    # cost against one, and the upscaled 8 x 8 digits keep their shape at that size
    g_width: int = 8
    g_max_width: int = 32
    g_bottleneck: int = 8
    g_bottleneck_blocks: int = 2
    # E and D: first width, doubling per halving down to 4 x 4 (paper: 64 up to 512)
    e_width: int = 8
    d_width: int = 8
    ed_max_width: int = 32
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0  # initial weight: the paper's 1 for CelebA-HQ (2 for AFHQ)
    # iterations over which lambda_ds falls to 0. The paper decays it over its whole training (100k iterations);
    # set it to train.steps. Default: ganzoo's default train.steps
    ds_decay_steps: int = 600
    lambda_cyc: float = 1.0
    r1_gamma: float = 1.0  # D adds gamma / 2 E||grad D(x)||^2 (the paper's lambda_reg = 1 times its 0.5)
    # G, E and D. Paper: 1e-4, for 100k iterations. On 3 colour domains of digits (batch 32, 32 px), after
    # 150 iterations 1e-3 translated 99% of held-out digits to the target colour (cycle L1 0.13); 1e-4 28% (1.04)
    lr: float = 1e-3
    f_lr: float = 1e-5  # F: the paper's 100x smaller rate for the mapping network (paper 1e-6)
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    # deviation: the decay warms up as min(ema_decay, (1 + t) / (10 + t)), so runs of a few hundred
    # iterations do not evaluate what is mostly the initialisation (see ema_decay_at); False is the paper's
    ema_warmup: bool = True

    def __post_init__(self) -> None:
        if self.ds_decay_steps < 1:
            raise ValueError(f"ds_decay_steps must be at least 1, got {self.ds_decay_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mapping_shared_layers < 1 or self.mapping_branch_layers < 1:
            raise ValueError("the mapping network needs at least one shared and one per-domain layer")


@register
class StarGANv2(Family):
    name = "stargan_v2"
    task = TaskKind.MULTI_DOMAIN_TRANSLATION
    paper = ("Choi, Uh, Yoo & Ha, StarGAN v2: Diverse Image Synthesis for Multiple Domains, CVPR 2020 "
             "(arXiv:1912.01865)")
    Config = StarGANv2Config
    tiny = {"latent_dim": 4, "style_dim": 4, "mapping_width": 8, "mapping_shared_layers": 1,
            "mapping_branch_layers": 2, "g_width": 4, "g_max_width": 8, "g_bottleneck_blocks": 1,
            "e_width": 4, "d_width": 4, "ed_max_width": 8}

    # generate copies a reference's style, or samples a style code without references
    style_guided = True

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        super().check_spec(spec)
        if spec.num_domains < 2:
            raise ConfigError(f"family {cls.name} translates between single-label domains and needs data with at "
                              f"least 2 domains (data.source: digit_domains or domains:folder:PATH); the data has "
                              f"{spec.num_domains} domains (attributes alone are not domains)")

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        c, s, d = spec.channels, spec.image_size, spec.num_domains
        nets = {"G": Generator(c, s, cfg.style_dim, cfg.g_width, cfg.g_max_width, cfg.g_bottleneck,
                               cfg.g_bottleneck_blocks),
                "F": MappingNetwork(cfg.latent_dim, cfg.style_dim, d, cfg.mapping_width, cfg.mapping_shared_layers,
                                    cfg.mapping_branch_layers),
                "E": StyleEncoder(c, s, cfg.style_dim, d, cfg.e_width, cfg.ed_max_width),
                "D": Discriminator(c, s, d, cfg.d_width, cfg.ed_max_width)}
        for net in nets.values():
            net.apply(he_init)
        # the EMA copies start from the initial weights, as the paper's deep copies do
        return {name: net if name == "D" else WithEMA(net) for name, net in nets.items()}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        return {name: torch.optim.Adam(self.nets[name].parameters(), cfg.f_lr if name == "F" else cfg.lr,
                                       betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
                for name in ("G", "F", "E", "D")}

    def phases(self) -> list[Phase]:
        # the paper's four steps, all on the same real batch
        return [Phase("D_latent", ("D",), self.discriminator_latent_loss),
                Phase("D_reference", ("D",), self.discriminator_reference_loss, uses_data=False),
                Phase("G_latent", ("G", "F", "E"), self.generator_latent_loss, uses_data=False,
                      after_step=self.update_mapping_and_encoder_ema),
                Phase("G_reference", ("G",), self.generator_reference_loss, uses_data=False,
                      after_step=self.update_generator_ema)]

    # -- targets -------------------------------------------------------------------------------------

    def random_domains(self, n: int, device: torch.device) -> Tensor:
        return torch.randint(self.spec.num_domains, (n,), device=device)

    @staticmethod
    def reference_pairs(domains: Tensor) -> tuple[Tensor, Tensor]:
        """(first, second) reference rows per row: a random row, and a random other row of its domain
        (the first itself when its domain has no other row); the target is the first's domain."""
        n = domains.size(0)
        first = torch.randperm(n, device=domains.device)
        same = domains[first].view(-1, 1) == domains.view(1, -1)  # [i, j]: row j shares reference i's domain
        same[torch.arange(n, device=domains.device), first] = False
        scores = torch.where(same, torch.rand(n, n, device=domains.device), torch.full((n, n), -1.0,
                                                                                       device=domains.device))
        second = torch.where(same.any(dim=1), scores.argmax(dim=1), first)
        return first, second

    def latent_styles(self, mapping: nn.Module, domains: Tensor) -> Tensor:
        return mapping(self.latent(domains.size(0), self.config.latent_dim, domains.device), domains)

    # -- losses --------------------------------------------------------------------------------------

    def discriminator_latent_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        targets = self.random_domains(len(batch), batch.images.device)
        with torch.no_grad():
            styles = self.latent_styles(nets["F"], targets)
        return self.discriminator_loss(batch, nets, styles, targets, "lat")

    def discriminator_reference_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        rows, _ = self.reference_pairs(batch.domains)
        targets = batch.domains[rows]
        with torch.no_grad():
            styles = nets["E"](batch.images[rows], targets)
        return self.discriminator_loss(batch, nets, styles, targets, "ref")

    def discriminator_loss(self, batch: ImageBatch, nets: Networks, styles: Tensor, targets: Tensor,
                           tag: str) -> LossResult:
        with torch.no_grad():
            fake = nets["G"](batch.images, styles)
        real = batch.images.detach().requires_grad_(True)
        real_logits = nets["D"](real, batch.domains)
        fake_logits = nets["D"](fake, targets)
        loss, logistic, r1 = stargan_v2_discriminator_loss(real_logits, fake_logits, real, self.config.r1_gamma)
        return loss, {f"d_loss_{tag}": loss.item(), f"d_logistic_{tag}": logistic.item(), f"r1_{tag}": r1.item(),
                      f"d_real_{tag}": torch.sigmoid(real_logits).mean().item(),
                      f"d_fake_{tag}": torch.sigmoid(fake_logits).mean().item()}

    def generator_latent_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        targets = self.random_domains(len(batch), batch.images.device)
        styles = self.latent_styles(nets["F"], targets)
        with torch.no_grad():
            second_styles = self.latent_styles(nets["F"], targets)
        return self.generator_loss(batch, nets, styles, second_styles, targets, "lat")

    def generator_reference_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        rows, second_rows = self.reference_pairs(batch.domains)
        targets = batch.domains[rows]
        styles = nets["E"](batch.images[rows], targets)
        with torch.no_grad():
            second_styles = nets["E"](batch.images[second_rows], targets)
        return self.generator_loss(batch, nets, styles, second_styles, targets, "ref")

    def generator_loss(self, batch: ImageBatch, nets: Networks, styles: Tensor, second_styles: Tensor,
                       targets: Tensor, tag: str) -> LossResult:
        cfg, images = self.config, batch.images
        fake = nets["G"](images, styles)
        with torch.no_grad():  # the diversity term's second output is a constant: no graph needed
            second_fake = nets["G"](images, second_styles)
        reconstructions = nets["G"](fake, nets["E"](images, batch.domains))
        lambda_ds = self.diversity_weight(nets)
        loss, terms = stargan_v2_generator_loss(nets["D"](fake, targets), styles, nets["E"](fake, targets), fake,
                                                second_fake, images, reconstructions, cfg.lambda_sty, lambda_ds,
                                                cfg.lambda_cyc)
        return loss, {f"g_loss_{tag}": loss.item(), **{f"g_{k}_{tag}": v.item() for k, v in terms.items()},
                      "lambda_ds": lambda_ds}

    def diversity_weight(self, nets: Networks) -> float:
        """lambda_ds at the current iteration (G's step counter)."""
        return diversity_weight(unwrap(nets["G"]).steps, self.config.lambda_ds, self.config.ds_decay_steps)

    def update_mapping_and_encoder_ema(self, nets: Networks) -> None:
        for name in ("F", "E"):
            unwrap(nets[name]).update_ema(self.config.ema_decay, self.config.ema_warmup)

    def update_generator_ema(self, nets: Networks) -> None:
        unwrap(nets["G"]).update_ema(self.config.ema_decay, self.config.ema_warmup)

    # -- generation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def style_of(self, references: Tensor, domains: Tensor) -> Tensor:
        """Reference-guided style codes E_ema(references, domains), N x style_dim."""
        return unwrap(self.nets["E"]).ema(references.to(self.device), domains.to(self.device))

    @torch.no_grad()
    def latent_style(self, z: Tensor, domains: Tensor) -> Tensor:
        """Latent-guided style codes F_ema(z, domains), N x style_dim."""
        return unwrap(self.nets["F"]).ema(z.to(self.device), domains.to(self.device))

    @torch.no_grad()
    def translate(self, images: Tensor, styles: Tensor) -> Tensor:
        """G_ema(images, styles), clamped to [-1, 1]."""
        return unwrap(self.nets["G"]).ema(images.to(self.device), styles.to(self.device)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def generate(self, n: int, condition: DomainCondition | None = None) -> Tensor:
        """The n source images translated to their target domains: with the references' styles when the
        condition has references, else with styles of fresh latents (a new draw per call)."""
        if not isinstance(condition, DomainCondition):
            raise DataError(f"family {self.name} translates images between domains: generate needs a "
                            "DomainCondition (source images, source and target domains)")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} source images for {n} outputs")
        if condition.target.dtype != torch.long:
            raise DataError(f"family {self.name} conditions on domain indices; got targets of {condition.target.dtype}")
        if condition.references is None:
            styles = self.latent_style(self.latent(n, self.config.latent_dim), condition.target)
        else:
            styles = self.style_of(condition.references, condition.target)
        return self.translate(condition.images, styles)

    def export_generator(self) -> StarGANv2Export:
        cfg = self.config
        return StarGANv2Export(unwrap(self.nets["G"]).ema, unwrap(self.nets["F"]).ema, self.spec, cfg.latent_dim,
                               cfg.style_dim)
