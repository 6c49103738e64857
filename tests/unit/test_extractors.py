"""Feature extractors: the domain CNN (training, cache) and the FID Inception-v3 (weights file round trip)."""

import json

import numpy as np
import pytest
import torch

from components.config import EvaluationConfig
from components.data import RawImages, load_prepared, read_source, to_unit_range, write_prepared
from components.errors import CheckpointError, ConfigError, DataError
from components.evaluation import extractors
from components.evaluation.extractors import (
    FIDInceptionV3,
    InceptionV3Extractor,
    build_extractor,
    load_or_train_domain_extractor,
    resize_like_tensorflow1,
    train_domain_extractor,
)


def _prepared(directory, count=600, labelled=True):
    """The first ``count`` scikit-learn digits at 16 x 16, written in the prepared format."""
    raw = read_source("digits", image_size=16)
    labels = raw.labels[:count] if labelled else None
    write_prepared(RawImages(raw.images[:count], labels, raw.class_names if labelled else [], "digits"), directory)
    return load_prepared(directory)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _prepared(tmp_path_factory.mktemp("digits") / "prepared")


# Domain CNN


def test_domain_extractor_trains_and_extracts(digits):
    extractor = train_domain_extractor(digits, epochs=3, seed=0, data_version="v1")
    assert extractor.accuracy > 0.5  # ten classes: chance is 0.1
    assert extractor.identity.startswith("domain-cnn:") and len(extractor.identity) == len("domain-cnn:") + 16
    assert extractor.meta["held_out_count"] == 60 and extractor.meta["train_count"] == 540
    features, probs = extractor.extract(to_unit_range(digits.images[:20]), batch_size=8)
    assert features.shape == (20, 128) and probs.shape == (20, 10)
    assert features.dtype == probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_domain_extractor_is_cached_per_data_version(digits, tmp_path, monkeypatch):
    first = load_or_train_domain_extractor(digits, "v1", tmp_path, epochs=1, seed=0)
    directory = tmp_path / "domain-cnn-v1"
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["data_version"] == "v1" and meta["epochs"] == 1 and meta["num_classes"] == 10
    assert meta["channels"] == 1 and meta["image_size"] == 16 and meta["accuracy"] == first.accuracy
    mtime = (directory / "weights.safetensors").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("trained again although the version is cached")

    monkeypatch.setattr(extractors, "train_domain_extractor", refuse)
    second = load_or_train_domain_extractor(digits, "v1", tmp_path, epochs=1, seed=0)
    assert second.identity == first.identity
    assert (directory / "weights.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["domain-cnn-v1"]  # no temporary directory left behind
    images = to_unit_range(digits.images[:5])
    np.testing.assert_allclose(second.extract(images)[0], first.extract(images)[0], rtol=1e-6, atol=1e-6)


def test_unlabelled_data_needs_inception_weights(tmp_path):
    unlabelled = _prepared(tmp_path / "prepared", count=50, labelled=False)
    with pytest.raises(ConfigError, match="needs labels.*evaluation.inception_weights") as error:
        load_or_train_domain_extractor(unlabelled, "v1", tmp_path / "cache", epochs=1, seed=0)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_unreadable_cache_names_the_directory(digits, tmp_path):
    (tmp_path / "domain-cnn-v2").mkdir()
    (tmp_path / "domain-cnn-v2" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="domain-cnn-v2.*delete the directory"):
        load_or_train_domain_extractor(digits, "v2", tmp_path, epochs=1, seed=0)


def test_data_versions_become_safe_directory_names(digits, tmp_path):
    extractor = load_or_train_domain_extractor(digits, "sha256:../ab", tmp_path, epochs=1, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["domain-cnn-sha256_.._ab"]
    assert extractor.meta["data_version"] == "sha256:../ab"
    with pytest.raises(CheckpointError, match="data version 'sha256:../ab', not 'sha256/../ab'"):
        load_or_train_domain_extractor(digits, "sha256/../ab", tmp_path, epochs=1, seed=0)  # same directory name
    with pytest.raises(ConfigError, match="data version is empty"):
        load_or_train_domain_extractor(digits, "", tmp_path, epochs=1, seed=0)


def test_domain_extractor_refuses_other_channel_counts(digits):
    extractor = train_domain_extractor(digits, epochs=1, seed=0)
    with pytest.raises(DataError, match="3 channels"):
        extractor.extract(np.zeros((2, 3, 16, 16), dtype=np.float32))


# FID Inception-v3


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised network saved as the converted weights files are: no batch-norm counters."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():  # non-trivial running statistics, so loading them is tested too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("inception") / "weights-inception.pth"
    torch.save(state, path)
    return path, state


def test_inception_state_dict_round_trip(inception_file):
    path, state = inception_file
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state and state["fc.weight"].shape == (1008, 2048)
    extractor = InceptionV3Extractor.from_file(path)
    loaded = extractor.network.state_dict()
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key
    assert extractor.identity.startswith("inception-v3:") and extractor.num_classes == 1008
    images = np.random.default_rng(0).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)  # grey: made 3-channel
    features, probs = extractor.extract(images)
    assert features.shape == (2, 2048) and probs.shape == (2, 1008)
    assert np.isfinite(features).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_inception_accepts_data_parallel_prefixes(inception_file, tmp_path):
    _, state = inception_file
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "prefixed.pth")
    InceptionV3Extractor.from_file(tmp_path / "prefixed.pth")


def test_inception_with_missing_keys_names_the_file(inception_file, tmp_path):
    _, state = inception_file
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    with pytest.raises(CheckpointError, match=r"partial\.pth.*2 keys missing") as error:
        InceptionV3Extractor.from_file(path)
    assert "\n" not in str(error.value)


def test_inception_with_a_wrong_shape_names_the_key(inception_file, tmp_path):
    _, state = inception_file
    path = tmp_path / "wrong.pth"
    torch.save({**state, "fc.weight": torch.zeros(1000, 2048)}, path)
    with pytest.raises(CheckpointError, match=r"wrong\.pth: fc\.weight has shape"):
        InceptionV3Extractor.from_file(path)


def test_inception_missing_or_garbage_file(tmp_path):
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        InceptionV3Extractor.from_file(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pth: cannot load"):
        InceptionV3Extractor.from_file(tmp_path / "garbage.pth")


def test_resize_like_tensorflow1_samples_without_half_pixel_offset():
    # 2 -> 4 samples at 0, 0.5, 1, 1.5 (clamped): [0, 5, 10, 10]; torch's bilinear would give [0, 2.5, 7.5, 10]
    row = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = resize_like_tensorflow1(row, 4)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 10.0]


def test_build_extractor_picks_by_config(digits, tmp_path, inception_file):
    cfg = EvaluationConfig(inception_weights=str(inception_file[0]))
    assert isinstance(build_extractor(cfg, digits, "v1"), InceptionV3Extractor)
    cfg = EvaluationConfig(cache_dir=str(tmp_path), extractor_epochs=1)
    assert build_extractor(cfg, digits, "v1").identity.startswith("domain-cnn:")
    assert (tmp_path / "domain-cnn-v1" / "weights.safetensors").is_file()
