"""Every noise-to-image family learns something at a short budget, which its untrained generator does not.

Each family trains through the real trainer (2 Ray workers x 1 CPU, batch 64, its shipped defaults) for
a few hundred steps (a step budget, so the check does not depend on the machine's speed), and the
evaluator scores it beside the same family untrained.
The check is deliberately weaker than the zoo's bars (benchmarks/zoo_report.py, minutes of training),
but it is one that an untrained generator fails: samples of many classes, an FID well below the
untrained generator's, and the family's own metric above chance. A loss that stops teaching turns
`make test-zoo` red. The test also asserts that the untrained generator fails the same check, so the
check cannot pass vacuously.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from components.config import EvaluationConfig
from components.evaluation.evaluate import evaluate_checkpoint
from components.families import DataSpec, build_family
from components.training.checkpoint import TrainingState, save_checkpoint
from components.training.launcher import train_family

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.zoo]

# Steps per family: enough for the family to learn visibly, few enough for CI
QUICK_STEPS = {"dcgan": 200, "ebgan": 150, "wgan_gp": 200, "lsgan": 400, "acgan": 300, "sgan": 300, "gan_t2i": 300}


@dataclass(frozen=True)
class QuickCheck:
    """What a family must show after its QUICK_STEPS: ``classes`` covered, FID at most ``fid_ratio`` x the
    untrained generator's, and each of its own metrics at least the given floor (chance is below it)."""

    classes: int = 6
    fid_ratio: float = 0.5
    own: tuple[tuple[str, float], ...] = ()

    def failures(self, metrics: dict[str, float], untrained_fid: float) -> list[str]:
        found = []
        if metrics["classes_covered"] < self.classes:
            found.append(f"classes_covered {metrics['classes_covered']:.0f} < {self.classes}")
        if metrics["fid"] > self.fid_ratio * untrained_fid:
            found.append(f"fid {metrics['fid']:.1f} > {self.fid_ratio} x untrained {untrained_fid:.1f}")
        for name, floor in self.own:
            if metrics.get(name, float("-inf")) < floor:
                found.append(f"{name} {metrics.get(name)} < {floor}")
        return found


CONDITIONAL = QuickCheck(own=(("conditional_accuracy", 0.3),))  # chance: 0.1
CHECKS: dict[str, QuickCheck] = {
    "acgan": CONDITIONAL,
    "gan_t2i": CONDITIONAL,
    "sgan": QuickCheck(own=(("classifier_accuracy", 0.5),)),
}
# Not here yet: gan, wgan, began, pggan, stylegan and bigan, which at 5 CPU minutes do not pass the zoo's common
# bars (README, "The noise-to-image zoo") and within a CI-sized budget move too little to tell a working loss
# from a broken one; cgan and infogan, whose own metric is still near chance at the sizes tried and whose longer
# budgets are not calibrated yet. Their losses are pinned by unit tests against hand-computed values.
FAMILIES = list(QUICK_STEPS)


@pytest.fixture(scope="module")
def quick_eval(tmp_path_factory) -> EvaluationConfig:
    cache = tmp_path_factory.mktemp("extractor-cache")  # one extractor for the module's families
    return EvaluationConfig(num_samples=1000, batch_size=500, extractor_epochs=2, kid_subsets=5,
                            kid_subset_size=500, fid_bootstrap=0, cache_dir=str(cache))


def untrained_checkpoint(family: str, spec: DataSpec, directory) -> str:
    torch.manual_seed(0)
    built = build_family(family, spec, {})
    save_checkpoint(directory, built, built.build_optimizers(), TrainingState(step=0))
    return str(directory)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_at_a_short_budget_and_its_untrained_generator_does_not(
        ray_cluster, mnist_prepared, make_params, quick_eval, tmp_path, family):
    steps = QUICK_STEPS[family]
    params = make_params(f"train.steps={steps}", "train.max_seconds=null", "train.batch_size=64",
                         f"train.checkpoint_every={steps}", f"train.sample_every={steps}", "train.report_every=50",
                         "overrides={}")
    outcome = train_family(params, family, mnist_prepared, show_progress=False)
    assert outcome.ok, outcome.reason
    version = f"sha256:{mnist_prepared.data_hash()[:32]}"
    trained = evaluate_checkpoint(outcome.checkpoint, mnist_prepared, version, quick_eval).metrics
    spec = DataSpec(mnist_prepared.channels, mnist_prepared.image_size, mnist_prepared.num_classes)
    untrained = evaluate_checkpoint(untrained_checkpoint(family, spec, tmp_path / "untrained"), mnist_prepared,
                                    version, quick_eval).metrics
    check = CHECKS.get(family, QuickCheck())
    own = {name: trained.get(name) for name, _ in check.own}
    print(f"{family}: {outcome.step} steps, FID {trained['fid']:.1f} (untrained "
          f"{untrained['fid']:.1f}), classes {trained['classes_covered']:.0f}, {own}")  # shown by pytest -s
    assert check.failures(untrained, untrained["fid"]), f"{family}: the untrained generator passes the check"
    failures = check.failures(trained, untrained["fid"])
    assert not failures, f"{family} after {outcome.step} steps: {'; '.join(failures)}"
