"""Captions of digit images, from their label and two measured attributes, and their tokenizer.

The text-to-image family (``components/families/gan_t2i.py``) needs a caption
per training image; the bundled digit datasets have none, so one is written
from what can be measured on the image:

- the class word of its label ("seven"; "digit" when the label is unknown);
- its stroke thickness: thin, medium or thick;
- its slant: leaning left, standing upright or leaning right.

e.g. "a thick seven leaning right". Everything is a pure, vectorised function
of the batch (images N x C x H x W in [-1, 1], int labels N), so the caption
of an image is the same at every step and on every worker.

Stroke thickness is ``2 * ink area / ink perimeter`` of the image binarised at
mid-grey, as a fraction of the image width: for a stroke of width w and length
L that is wL / (w + L), about w, whatever the digit's shape. Ink coverage
alone would call every "1" thin and every "0" thick; this estimate's per-class
tertiles on mnist5k all lie within 0.058-0.073 (lower) and 0.071-0.088
(upper), so one pair of fixed fractions serves every class: thin below 0.0625,
thick above 0.0775, about mnist5k's overall tertiles (33% thin, 32% thick).
The bundled ``digits`` source (8 x 8 images upscaled to 32 px) measures
0.12-0.25 (5th to 95th percentile): all of it is thick, as it looks.

Slant is the shear of the ink's second moments, mu11 / mu02 with the row axis
pointing up: x moves by that many columns per row climbed, so > 0 leans right
("/"). |shear| <= 0.15 (about 8.5 degrees) is upright. On mnist5k: 15% lean
left, 38% stand upright, 48% lean right.

Which phrases a caption states is also fixed per image, by a hash of its 8-bit
pixels: half the captions state both attributes, a quarter only the
thickness, an eighth only the slant and an eighth neither ("an eight"). Human
captions, like the paper's, mention only some attributes; training on partial
captions puts a request such as "a thin two" inside the training distribution.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import Tensor

from components.errors import DataError

CLASS_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
UNLABELLED_WORD = "digit"  # the class word of an image whose label is unknown
THICKNESS_WORDS = ("thin", "medium", "thick")
SLANT_PHRASES = ("leaning left", "standing upright", "leaning right")
PAD = 0
VOCABULARY = ("<pad>", "a", "an", *THICKNESS_WORDS, *CLASS_WORDS, UNLABELLED_WORD,
              "leaning", "standing", "left", "upright", "right")
WORD_IDS = {word: index for index, word in enumerate(VOCABULARY)}
MAX_WORDS = 8  # token rows are padded to this length; the longest caption has 5 words

THIN_BELOW = 0.0625  # stroke thickness, as a fraction of the image width
THICK_ABOVE = 0.0775
UPRIGHT_WITHIN = 0.15  # |shear|: columns moved per row climbed

# Which phrases a caption states, indexed by the pixel hash modulo 8
FULL, THICKNESS_ONLY, SLANT_ONLY, CLASS_ONLY = 0, 1, 2, 3
FORM_OF_HASH = (FULL, FULL, FULL, FULL, THICKNESS_ONLY, THICKNESS_ONLY, SLANT_ONLY, CLASS_ONLY)
_HASH_PRIME = 2_147_483_647  # 2^31 - 1: the products below stay within int64


# -- attributes -----------------------------------------------------------------------------------

def ink(images: Tensor) -> Tensor:
    """N x H x W ink intensity in [0, 1]: the grey level, inverted when the background is light.

    The background is told by the border, which a centred digit does not reach.
    """
    grey = (images.float().mean(dim=1) + 1) / 2
    border = torch.cat([grey[:, 0], grey[:, -1], grey[:, 1:-1, 0], grey[:, 1:-1, -1]], dim=1).mean(dim=1)
    light_background = (border > 0.5).view(-1, 1, 1)
    return torch.where(light_background, 1 - grey, grey)


def stroke_thickness(images: Tensor) -> Tensor:
    """Per image, 2 * ink area / ink perimeter of the binarised image, as a fraction of its width."""
    binary = ink(images) > 0.5
    area = binary.sum(dim=(1, 2)).float()
    # the perimeter counts pixel edges between ink and background; ink on the border is padded out
    padded = torch.nn.functional.pad(binary.float(), (1, 1, 1, 1)).bool()
    perimeter = ((padded[:, 1:, :] != padded[:, :-1, :]).sum(dim=(1, 2))
                 + (padded[:, :, 1:] != padded[:, :, :-1]).sum(dim=(1, 2))).float()
    return 2 * area / perimeter.clamp(min=1) / images.size(-1)


def slant(images: Tensor) -> Tensor:
    """Per image, the shear mu11 / mu02 of the ink with rows counted upward: > 0 leans right."""
    weights = ink(images)
    height, width = weights.shape[1:]
    up = torch.arange(height, 0, -1, dtype=weights.dtype, device=weights.device).view(1, height, 1)
    across = torch.arange(width, dtype=weights.dtype, device=weights.device).view(1, 1, width)
    mass = weights.sum(dim=(1, 2)).clamp(min=1e-6)
    up_mean = (weights * up).sum(dim=(1, 2)) / mass
    across_mean = (weights * across).sum(dim=(1, 2)) / mass
    dy = up - up_mean.view(-1, 1, 1)
    dx = across - across_mean.view(-1, 1, 1)
    mu11 = (weights * dx * dy).sum(dim=(1, 2)) / mass
    mu02 = (weights * dy * dy).sum(dim=(1, 2)) / mass
    return mu11 / mu02.clamp(min=1e-6)


def thickness_classes(images: Tensor) -> Tensor:
    """Per image, 0 thin, 1 medium, 2 thick (int64)."""
    thickness = stroke_thickness(images)
    return (thickness >= THIN_BELOW).long() + (thickness > THICK_ABOVE).long()


def slant_classes(images: Tensor) -> Tensor:
    """Per image, 0 leaning left, 1 upright, 2 leaning right (int64)."""
    shear = slant(images)
    return (shear >= -UPRIGHT_WITHIN).long() + (shear > UPRIGHT_WITHIN).long()


def pixel_hash(images: Tensor) -> Tensor:
    """Per image, an int64 in [0, 2^31 - 1) from its 8-bit pixels: the same image, the same hash."""
    pixels = ((images.flatten(1).float() + 1) * 127.5).round().clamp(0, 255).long()
    positions = torch.arange(pixels.size(1), device=pixels.device)
    weights = (positions * 2_654_435_761 + 97_531) % _HASH_PRIME + 1  # Knuth's multiplicative spread
    return ((pixels + 1) * weights % _HASH_PRIME).sum(dim=1) % _HASH_PRIME


def caption_forms(images: Tensor) -> Tensor:
    """Per image, which phrases its caption states (FULL, THICKNESS_ONLY, SLANT_ONLY, CLASS_ONLY)."""
    table = torch.tensor(FORM_OF_HASH, device=images.device)
    return table[pixel_hash(images) % len(FORM_OF_HASH)]


# -- captions and tokens --------------------------------------------------------------------------

def caption_text(label: int | None, thickness: int | None, slant_class: int | None) -> str:
    """ "a thick seven leaning right"; a None attribute is left out, a None label says "digit"."""
    noun = UNLABELLED_WORD if label is None or label < 0 else CLASS_WORDS[label]
    words = ([THICKNESS_WORDS[thickness]] if thickness is not None else []) + [noun]
    article = "an" if words[0] == "eight" else "a"  # by sound: "a one", "an eight"
    phrase = [SLANT_PHRASES[slant_class]] if slant_class is not None else []
    return " ".join([article, *words, *phrase])


def _caption_table() -> Tensor:
    """Token rows of every caption, indexed [form, thickness, slant, class + 1] (class 0 is "digit")."""
    rows = torch.zeros(4, 3, 3, len(CLASS_WORDS) + 1, MAX_WORDS, dtype=torch.long)
    for form in (FULL, THICKNESS_ONLY, SLANT_ONLY, CLASS_ONLY):
        for thickness in range(3):
            for slant_class in range(3):
                for label in range(-1, len(CLASS_WORDS)):
                    text = caption_text(label, thickness if form in (FULL, THICKNESS_ONLY) else None,
                                        slant_class if form in (FULL, SLANT_ONLY) else None)
                    rows[form, thickness, slant_class, label + 1] = tokenize([text])[0]
    return rows


def caption_tokens(images: Tensor, labels: Tensor | None) -> Tensor:
    """N x MAX_WORDS token ids of each image's caption; labels None (or -1) caption a "digit"."""
    n = images.size(0)
    if labels is None:
        labels = torch.full((n,), -1, dtype=torch.long, device=images.device)
    if labels.numel() and int(labels.max()) >= len(CLASS_WORDS):
        raise DataError(f"caption: label {int(labels.max())} has no class word; captions name the classes "
                        f"0-{len(CLASS_WORDS) - 1} ({', '.join(CLASS_WORDS)})")
    table = _CAPTION_TABLE.to(images.device)
    return table[caption_forms(images), thickness_classes(images), slant_classes(images), labels.long() + 1]


def captions_for(images: Tensor, labels: Tensor | None) -> list[str]:
    """Each image's caption, as text."""
    return detokenize(caption_tokens(images, labels))


def requested_attributes(n: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """(thickness, slant) classes that sample i of n asks for: (i // K) % 3 and (i // 3K) % 3 for K classes.

    With balanced labels (``arange(n) % K``) every class meets every attribute pair evenly.
    """
    index = torch.arange(n)
    return (index // num_classes) % 3, (index // (3 * num_classes)) % 3


def requested_captions(labels: Tensor, num_classes: int) -> list[str]:
    """Full captions asking for these classes, with the attribute pairs of ``requested_attributes``."""
    thickness, slants = requested_attributes(labels.numel(), num_classes)
    return [caption_text(c, t, s) for c, t, s in zip(labels.tolist(), thickness.tolist(), slants.tolist())]


def split_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def tokenize(captions: Sequence[str]) -> Tensor:
    """len(captions) x MAX_WORDS word ids, padded with PAD; an unknown word is a one-line error."""
    if isinstance(captions, str):
        captions = [captions]
    rows = torch.full((len(captions), MAX_WORDS), PAD, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = split_words(caption)
        if not words:
            raise DataError(f"text: caption {caption!r} has no words")
        if len(words) > MAX_WORDS:
            raise DataError(f"text: caption {caption!r} has {len(words)} words; at most {MAX_WORDS}")
        for column, word in enumerate(words):
            if word not in WORD_IDS:
                raise DataError(f"text: unknown word {word!r} (known: {', '.join(VOCABULARY[1:])})")
            rows[row, column] = WORD_IDS[word]
    return rows


def detokenize(tokens: Tensor) -> list[str]:
    """The captions of token rows (PAD dropped)."""
    return [" ".join(VOCABULARY[i] for i in row if i != PAD) for row in tokens.tolist()]


def class_of_tokens(tokens: Tensor) -> Tensor:
    """Per row, the class its class word names (int64), -1 when it names none ("digit" or nothing)."""
    class_ids = torch.tensor([WORD_IDS[w] for w in CLASS_WORDS], device=tokens.device)
    hits = tokens.unsqueeze(-1) == class_ids  # N x L x K
    named = hits.any(dim=1)
    return torch.where(named.any(dim=1), named.float().argmax(dim=1), torch.full_like(tokens[:, 0], -1))


_CAPTION_TABLE = _caption_table()
