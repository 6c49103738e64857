"""Captions of digit images: measured attributes on hand-made images, the tokenizer, determinism."""

import pytest
import torch

from components.data import captions
from components.errors import DataError

SIZE = 28


def blank(n=1):
    return torch.full((n, 1, SIZE, SIZE), -1.0)


def vertical_bar(width: int, length: int = 20) -> torch.Tensor:
    """A white upright bar of the given width on black, centred."""
    image = blank()
    left, top = (SIZE - width) // 2, (SIZE - length) // 2
    image[0, 0, top:top + length, left:left + width] = 1.0
    return image


def slanted_line(shear: float, width: int = 3, length: int = 20) -> torch.Tensor:
    """A stroke whose column moves ``shear`` pixels right per row climbed ("/" for shear > 0)."""
    image = blank()
    top = (SIZE - length) // 2
    for row in range(top, top + length):
        climbed = (top + length - 1) - row
        left = round(SIZE / 2 - shear * length / 2 + shear * climbed)
        image[0, 0, row, left:left + width] = 1.0
    return image


# -- attributes -----------------------------------------------------------------------------------

def test_thickness_of_a_bar_is_about_its_width():
    # 2 * area / perimeter = 2 * w L / (2 (w + L)): w = 1, L = 20 -> 0.95 px; w = 5 -> 4 px
    thin, thick = vertical_bar(1), vertical_bar(5)
    assert captions.stroke_thickness(thin).item() == pytest.approx(20 / 21 / SIZE)
    assert captions.stroke_thickness(thick).item() == pytest.approx(100 / 25 / SIZE)
    assert captions.thickness_classes(torch.cat([thin, vertical_bar(2), thick])).tolist() == [0, 1, 2]


def test_thickness_does_not_depend_on_stroke_length():
    # ink coverage would call a short stroke thin; the perimeter estimate sees the same width
    short, long = vertical_bar(4, length=8), vertical_bar(4, length=24)
    assert captions.thickness_classes(short).item() == captions.thickness_classes(long).item() == 2


def test_dark_ink_on_light_paper_measures_as_light_ink_on_dark():
    bar = vertical_bar(5)
    assert captions.stroke_thickness(-bar).item() == pytest.approx(captions.stroke_thickness(bar).item())
    assert captions.slant(-slanted_line(0.5)).item() == pytest.approx(captions.slant(slanted_line(0.5)).item())


def test_slant_sign_follows_the_lean():
    right, left, upright = slanted_line(0.5), slanted_line(-0.5), vertical_bar(3)
    assert captions.slant(right).item() == pytest.approx(0.5, abs=0.05)
    assert captions.slant(left).item() == pytest.approx(-0.5, abs=0.05)
    assert captions.slant(upright).item() == pytest.approx(0.0, abs=1e-6)
    assert captions.slant_classes(torch.cat([left, upright, right])).tolist() == [0, 1, 2]


def test_attributes_are_vectorised_over_the_batch():
    batch = torch.cat([vertical_bar(1), slanted_line(0.5), vertical_bar(5)])
    one_by_one = torch.cat([captions.stroke_thickness(image[None]) for image in batch])
    assert torch.allclose(captions.stroke_thickness(batch), one_by_one)


# -- captions -------------------------------------------------------------------------------------

def test_caption_text_words_and_articles():
    assert captions.caption_text(7, 2, 2) == "a thick seven leaning right"
    assert captions.caption_text(2, 0, None) == "a thin two"
    assert captions.caption_text(8, None, None) == "an eight"
    assert captions.caption_text(8, None, 1) == "an eight standing upright"
    assert captions.caption_text(1, None, None) == "a one"
    assert captions.caption_text(None, 1, 0) == "a medium digit leaning left"


def test_caption_states_the_measured_attributes():
    images = torch.cat([slanted_line(0.5, width=5), vertical_bar(1)])  # thick leaning right; thin upright
    texts = captions.captions_for(images, torch.tensor([7, 1]))
    forms = captions.caption_forms(images).tolist()
    full = ["a thick seven leaning right", "a thin one standing upright"]
    for text, form, (article, thickness, noun, *slant_phrase) in zip(texts, forms, (f.split() for f in full)):
        expected = [article, *([thickness] if form in (captions.FULL, captions.THICKNESS_ONLY) else []), noun,
                    *(slant_phrase if form in (captions.FULL, captions.SLANT_ONLY) else [])]
        assert text.split() == expected


def test_captions_are_deterministic_per_image_and_batch_independent():
    torch.manual_seed(0)
    images = torch.rand(16, 1, SIZE, SIZE) * 2 - 1
    labels = torch.arange(16) % 10
    first = captions.caption_tokens(images, labels)
    again = captions.caption_tokens(images.clone(), labels.clone())
    reordered = captions.caption_tokens(images.flip(0), labels.flip(0))
    alone = captions.caption_tokens(images[3:4], labels[3:4])
    assert torch.equal(first, again) and torch.equal(first, reordered.flip(0)) and torch.equal(first[3:4], alone)


def test_caption_forms_mix_full_and_partial_captions():
    torch.manual_seed(1)
    forms = captions.caption_forms(torch.rand(2000, 1, SIZE, SIZE) * 2 - 1)
    shares = torch.bincount(forms, minlength=4).float() / len(forms)
    assert shares.tolist() == pytest.approx([0.5, 0.25, 0.125, 0.125], abs=0.04)


def test_unlabelled_images_are_captioned_as_digits():
    text = captions.captions_for(vertical_bar(3), None)[0]
    assert "digit" in text.split()


def test_labels_without_class_words_are_refused():
    with pytest.raises(DataError, match="label 10 has no class word"):
        captions.caption_tokens(blank(), torch.tensor([10]))


def test_requested_captions_cover_classes_and_attributes_evenly():
    texts = captions.requested_captions(torch.arange(90) % 10, 10)
    assert texts[0] == "a thin zero leaning left" and texts[13] == "a medium three leaning left"
    assert len(set(texts)) == 90


# -- tokenizer ------------------------------------------------------------------------------------

def test_tokenize_pads_and_detokenize_inverts():
    tokens = captions.tokenize(["a thick seven leaning right", "An eight."])
    assert tokens.shape == (2, captions.MAX_WORDS) and tokens.dtype == torch.int64
    assert tokens[1, 2:].eq(captions.PAD).all()
    assert captions.detokenize(tokens) == ["a thick seven leaning right", "an eight"]


def test_unknown_word_is_a_one_line_error_naming_it():
    with pytest.raises(DataError) as error:
        captions.tokenize(["a thin twelve"])
    message = str(error.value)
    assert message.startswith("text: unknown word 'twelve' (known: a, an, thin") and "\n" not in message


def test_empty_and_overlong_captions_are_refused():
    with pytest.raises(DataError, match="has no words"):
        captions.tokenize(["  "])
    with pytest.raises(DataError, match="at most 8"):
        captions.tokenize(["a " * 9])


def test_class_of_tokens():
    tokens = captions.tokenize(["a thin two", "a digit leaning left", "an eight"])
    assert captions.class_of_tokens(tokens).tolist() == [2, -1, 8]
