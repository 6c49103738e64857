"""params.yaml validation: every bad input is one line naming the key path and what was expected."""

import re
from pathlib import Path

import pytest

from components.config import load_params, validate_params
from components.errors import ConfigError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _error(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_params(raw)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_shipped_params_file_is_valid():
    params = load_params(REPO_PARAMS)
    assert params.families and params.train.workers >= 1
    assert params.data.dataset_name() == "mnist5k"


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"workers": "two"}}, "params.yaml: train.workers: expected a positive integer, got 'two'"),
    ({"train": {"workers": 0}}, "params.yaml: train.workers: expected a positive integer, got 0"),
    ({"train": {"steps": 1.5}}, "params.yaml: train.steps: expected a positive integer, got 1.5"),
    ({"train": {"seed": True}}, "params.yaml: train.seed: expected an integer, got True"),
    ({"train": {"gpus_per_worker": -1}}, "params.yaml: train.gpus_per_worker: expected a non-negative number"),
    ({"train": "fast"}, "params.yaml: train: expected a mapping, got 'fast'"),
    ({"data": {"image_size": 2}}, "params.yaml: data.image_size: expected null or an integer in 4..1024, got 2"),
    ({"registry": {"noise_sigmas": "x"}}, "params.yaml: registry.noise_sigmas: expected a non-negative number"),
    ({"families": []}, "params.yaml: families: expected a non-empty list of family names"),
    ({"train": {"placement": "scatter"}}, "params.yaml: train.placement: expected one of 'pack', 'spread', "
                                          "'strict_spread', got 'scatter'"),
    ({"train": {"precision": "fp8"}}, "params.yaml: train.precision: expected one of 'fp32', 'bf16', 'fp16', "
                                      "got 'fp8'"),
    ({"train": {"precision": 16}}, "params.yaml: train.precision: expected one of 'fp32', 'bf16', 'fp16', got 16"),
    ({"train": {"channels_last": "yes"}}, "params.yaml: train.channels_last: expected true or false, got 'yes'"),
    ({"train": {"compile": 1}}, "params.yaml: train.compile: expected true or false, got 1"),
    ({"train": {"max_seconds": 0}}, "params.yaml: train.max_seconds: expected a positive number or null, got 0"),
    ({"train": {"max_seconds": "5m"}}, "params.yaml: train.max_seconds: expected a positive number or null, got '5m'"),
])
def test_wrong_types_and_ranges_name_the_key_path(raw, expected):
    assert _error(raw).startswith(expected)


def test_an_unknown_key_lists_the_allowed_ones():
    message = _error({"train": {"wokers": 2}})
    assert message.startswith("params.yaml: train.wokers: unknown key (expected one of: steps, batch_size, workers")


def test_an_unknown_top_level_section_is_refused():
    assert _error({"trian": {}}).startswith("params.yaml: trian: unknown key")


def test_an_unknown_family_is_refused_with_the_known_names():
    message = _error({"families": ["dcgan", "bigbird"]})
    assert message.startswith("params.yaml: families[1]: unknown family 'bigbird' (expected one of: ")
    assert "dcgan" in message and "wgan_gp" in message


@pytest.mark.parametrize("overrides, expected", [
    ({"dcgan": {"lr": "fast"}}, "overrides.dcgan.lr: expected a number, got 'fast'"),
    ({"dcgan": {"learning_rate": 0.1}}, "overrides.dcgan.learning_rate: unknown hyperparameter of dcgan"),
    ({"wgan_gp": {"n_critic": 2.5}}, "overrides.wgan_gp.n_critic: expected an integer, got 2.5"),
    ({"wgan_gp": {"gp_weight": float("nan")}}, "overrides.wgan_gp.gp_weight: expected a finite non-negative number"),
    ({"wgan_gp": {"gp_weight": -1.0}}, "overrides.wgan_gp.gp_weight: expected a finite non-negative number"),
    ({"nosuch": {}}, "overrides.nosuch: unknown family"),
])
def test_family_overrides_are_checked_against_the_family_config(overrides, expected):
    assert expected in _error({"overrides": overrides})


def test_set_overrides_are_parsed_as_yaml_and_validated_the_same_way():
    params = load_params(REPO_PARAMS, ["train.steps=200", "overrides.dcgan.lr=0.001"])
    assert params.train.steps == 200 and params.family_config("dcgan").lr == 0.001
    with pytest.raises(ConfigError, match=r"^params.yaml \(with --set\): train.workers: expected a positive integer, "
                                          r"got 'two'$"):
        load_params(REPO_PARAMS, ["train.workers=two"])
    with pytest.raises(ConfigError, match=r"expected KEY.PATH=VALUE"):
        load_params(REPO_PARAMS, ["train.steps"])


def test_exponent_floats_without_a_dot_are_numbers_in_the_file_and_in_set(tmp_path):
    # YAML 1.1 (PyYAML's default) would read 2e-4 as the string '2e-4', and the override would be refused
    params_file = tmp_path / "params.yaml"
    text, count = re.subn(r"^overrides: .*$", "overrides:\n  dcgan: {lr: 3e-5}", REPO_PARAMS.read_text(), flags=re.M)
    assert count == 1
    params_file.write_text(text)
    assert load_params(params_file).family_config("dcgan").lr == pytest.approx(3e-5)
    params = load_params(REPO_PARAMS, ["overrides.dcgan.lr=5E-5", "overrides.dcgan.beta1=+1.5e-1"])
    assert params.family_config("dcgan").lr == pytest.approx(5e-5)
    assert params.family_config("dcgan").beta1 == pytest.approx(0.15)
    assert load_params(REPO_PARAMS, ["data.name=e5"]).data.name == "e5"  # not a number: no digits before the e


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {steps: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_params(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping at the top level, got list"):
        load_params(listing)


def test_the_gpu_readiness_keys_parse_with_fp32_defaults():
    default = validate_params({}).train
    assert (default.precision, default.channels_last, default.compile) == ("fp32", False, False)
    for precision in ("fp32", "bf16", "fp16"):
        train = validate_params({"train": {"precision": precision, "channels_last": True, "compile": True}}).train
        assert (train.precision, train.channels_last, train.compile) == (precision, True, True)


def test_precision_changes_the_params_hash_but_speed_settings_do_not():
    base = validate_params({}).params_hash("dcgan")
    assert validate_params({"train": {"precision": "fp32"}}).params_hash("dcgan") == base  # old runs keep theirs
    assert validate_params({"train": {"precision": "bf16"}}).params_hash("dcgan") != base
    assert validate_params({"train": {"channels_last": True, "compile": True}}).params_hash("dcgan") == base


def test_params_hash_changes_with_what_shapes_the_model_only():
    base = validate_params({})
    assert base.params_hash("dcgan") == validate_params({"train": {"report_every": 3}}).params_hash("dcgan")
    assert base.params_hash("dcgan") != validate_params({"train": {"steps": 7}}).params_hash("dcgan")
    assert base.params_hash("dcgan") != validate_params({"overrides": {"dcgan": {"lr": 0.1}}}).params_hash("dcgan")


def test_dataset_name_comes_from_the_source_unless_named():
    assert validate_params({"data": {"source": "folder:/x/faces/"}}).data.dataset_name() == "faces"
    assert validate_params({"data": {"source": "s3://bucket/sets/cats"}}).data.dataset_name() == "cats"
    assert validate_params({"data": {"source": "npz:/d/shapes.npz"}}).data.dataset_name() == "shapes"
    assert validate_params({"data": {"name": "mine"}}).data.dataset_name() == "mine"
