"""The family contract, checked on every registered family at tiny size.

A new family is covered here the moment it registers.
"""

import copy
import math

import pytest
import torch

from components.errors import ConfigError
from components.families import DataSpec, ImageBatch, TaskKind, build_family, family_names, get_family
from components.training.checkpoint import TrainingState, load_family, save_checkpoint
from components.training.loop import Precision, run_phase

SPEC = DataSpec(channels=1, image_size=8, num_classes=3)
# translation families get data of their task: grey inputs to colour targets; 4-class label maps of colour images
SPECS = {TaskKind.PAIRED_TRANSLATION: DataSpec(channels=3, image_size=16, num_classes=3, input_channels=1),
         TaskKind.SEGMENTATION_TO_IMAGE: DataSpec(channels=3, image_size=16, num_classes=3, map_classes=4),
         TaskKind.UNPAIRED_TRANSLATION: DataSpec(channels=3, image_size=16, num_classes=3, num_domains=2),
         # multi-domain data has single-label domains (colour) and multi-label attributes (colour, stroke, ...)
         TaskKind.MULTI_DOMAIN_TRANSLATION: DataSpec(channels=3, image_size=16, num_classes=3, num_domains=3,
                                                     num_attributes=5)}
FAMILIES = family_names()


def spec_for(name: str) -> DataSpec:
    return SPECS.get(get_family(name).task, SPEC)


def tiny(name: str):
    torch.manual_seed(0)
    return build_family(name, spec_for(name), get_family(name).tiny)


def batch_for(family, n=6):
    spec = family.spec
    labels = torch.arange(n) % spec.num_classes if spec.num_classes else None
    images = torch.rand(n, spec.channels, spec.image_size, spec.image_size) * 2 - 1
    inputs = label_maps = None
    if spec.input_channels:
        inputs = torch.rand(n, spec.input_channels, spec.image_size, spec.image_size) * 2 - 1
    if spec.map_classes:
        label_maps = torch.randint(spec.map_classes, (n, spec.image_size, spec.image_size))
    domains = torch.arange(n) % spec.num_domains if spec.num_domains else None  # balanced, as the sampler draws
    attributes = mask = None
    if spec.num_attributes:
        attributes = torch.randint(2, (n, spec.num_attributes)).float()
        mask = torch.ones(n, spec.num_attributes)
    return ImageBatch(images, labels, inputs, label_maps, domains, attributes, mask)


def conditions_for(family, n):
    """Balanced classes for noise-to-image families, real inputs of a batch for translation families."""
    torch.manual_seed(11)
    return family.condition_of(batch_for(family, n)) if family.translates else family.sample_conditions(n)


def image_shape(family, n):
    return (n, family.spec.channels, family.spec.image_size, family.spec.image_size)


def test_the_first_four_families_are_registered():
    assert {"gan", "dcgan", "wgan_gp", "cgan"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_declares_the_contract(name):
    cls = get_family(name)
    assert cls.name == name and isinstance(cls.task, TaskKind) and cls.paper
    family = tiny(name)
    optimizers = family.build_optimizers()
    for phase in family.phases():
        assert phase.repeats >= 1 and phase.every >= 1
        for module in phase.modules:
            assert module in family.nets and module in optimizers


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_hyperparameter_is_refused(name):
    with pytest.raises(ConfigError, match="no_such_knob"):
        build_family(name, SPEC, {"no_such_knob": 1})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: every family trains under autocast (GPU readiness)
@pytest.mark.parametrize("name", FAMILIES)
def test_each_phase_updates_only_its_modules_with_finite_losses(name, precision):
    family = tiny(name)
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    for phase in family.phases():
        before = {k: copy.deepcopy(m.state_dict()) for k, m in nets.items()}
        logs = run_phase(phase, batch_for(family), nets, optimizers, Precision(precision, "cpu"))
        assert logs and all(type(v) is float and math.isfinite(v) for v in logs.values()), logs
        for key, module in nets.items():
            changed = any(not torch.equal(before[key][p], v) for p, v in module.state_dict().items()
                          if v.dtype.is_floating_point and "running" not in p)
            assert changed == (key in phase.modules), f"phase {phase.name}: {key} changed={changed}"


@pytest.mark.parametrize("name", FAMILIES)
def test_generate_has_the_task_shape(name):
    family = tiny(name)
    family.nets.eval()
    images = family.generate(5, conditions_for(family, 5))
    assert images.shape == image_shape(family, 5)
    assert images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    family = tiny(name)
    optimizers = family.build_optimizers()
    for phase in family.phases():  # give the optimizers state worth saving
        run_phase(phase, batch_for(family), dict(family.nets.items()), optimizers)
    save_checkpoint(tmp_path / "ckpt", family, optimizers, TrainingState(step=3))
    restored, meta = load_family(tmp_path / "ckpt")
    assert meta["family"] == name and meta["step"] == 3
    for f in (family, restored):
        f.nets.eval()
    conditions = conditions_for(family, 4)
    torch.manual_seed(7)
    expected = family.generate(4, conditions)
    torch.manual_seed(7)
    assert torch.equal(restored.generate(4, conditions), expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_exported_generator_takes_one_tensor_and_makes_task_shaped_images(name):
    family = tiny(name)
    family.nets.eval()
    exported = family.export_generator()
    with torch.no_grad():
        images = exported(exported.example_inputs(4))
    assert images.shape == image_shape(family, 4)
    assert torch.isfinite(images).all()
