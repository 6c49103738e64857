"""`ganzoo sample` on unpaired and multi-domain families: latent- and reference-guided StarGAN v2 and MUNIT,
RelGAN's attribute interpolation, and the one-line refusals.

Tiny untrained checkpoints sized to the prepared derived data (no Ray): the
tests check what each grid column is, not how good a translation looks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.data import load_prepared
from components.data.prepared import prepare_dataset
from components.errors import GanzooError
from components.evaluation.translation import held_out_batches, translate_held_out
from components.families import DataSpec, build_family, get_family
from components.training.checkpoint import TrainingState, load_family, save_checkpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))
CELL = 32 + 2  # the grid writer: each 32 px image plus 2 px padding


def ganzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def spec_of(prepared) -> DataSpec:
    return DataSpec(prepared.channels, prepared.image_size, prepared.num_classes, 0, 0, len(prepared.domain_names),
                    len(prepared.attribute_names), tuple(prepared.label_sets))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for source in ("digit_domains", "digits2colored"):
        prepare_dataset(source, root / source)
    return root


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """Tiny untrained checkpoints: stargan_v2, relgan and stargan (domains) on digit_domains, munit on
    digits2colored."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name, source, extra in (("stargan_v2", "digit_domains", {}), ("relgan", "digit_domains", {}),
                                ("stargan", "digit_domains", {"labels": "domains"}),
                                ("munit", "digits2colored", {})):
        torch.manual_seed(0)
        family = build_family(name, spec_of(load_prepared(data / source)), {**get_family(name).tiny, **extra})
        paths[name] = save_checkpoint(root / name, family, family.build_optimizers(), TrainingState(step=1))
    return paths


def loaded(checkpoints, name: str):
    family, _ = load_family(checkpoints[name])
    return family


def test_reference_guided_columns_show_each_reference_before_its_translation(data, checkpoints):
    family = loaded(checkpoints, "stargan_v2")
    prepared = load_prepared(data / "digit_domains")
    grid, outputs, labels, columns = translate_held_out(family, prepared, 4, seed=0, guide="reference")
    assert columns == 1 + 2 * 3 and grid.shape == (4 * columns, 3, 32, 32) and outputs.shape == (4 * 3, 3, 32, 32)
    rows = torch.from_numpy(grid).view(4, columns, 3, 32, 32)
    batch = next(held_out_batches(prepared, 4, 4))
    for domain in range(3):
        reference, output = rows[:, 1 + 2 * domain], rows[:, 2 + 2 * domain]
        target = torch.full((4,), domain)
        expected = family.translate(batch.images, family.style_of(reference, target))
        torch.testing.assert_close(output, expected.clamp(-1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(rows[:, 0], batch.images)
    # the references carry the style, so another seed gives the same grid
    again = translate_held_out(family, prepared, 4, seed=1, guide="reference")[0]
    np.testing.assert_allclose(again, grid, atol=1e-6)


def test_latent_guided_columns_draw_a_style_code_per_column(data, checkpoints):
    family = loaded(checkpoints, "stargan_v2")
    prepared = load_prepared(data / "digit_domains")
    grid, outputs, _, columns = translate_held_out(family, prepared, 3, seed=0, guide="latent", styles=2)
    assert columns == 1 + 3 * 2 and outputs.shape == (3 * 3 * 2, 3, 32, 32)
    rows = grid.reshape(3, columns, 3, 32, 32)
    assert np.abs(rows[:, 1] - rows[:, 2]).max() > 1e-4  # two style codes for one domain differ
    np.testing.assert_allclose(translate_held_out(family, prepared, 3, seed=0, guide="latent", styles=2)[0], grid,
                               atol=1e-6)  # seeded


def test_munit_is_guided_both_ways_too(data, checkpoints):
    family = loaded(checkpoints, "munit")
    prepared = load_prepared(data / "digits2colored")
    _, outputs, _, columns = translate_held_out(family, prepared, 2, guide="latent", styles=3)
    assert columns == 1 + 2 * 3 and outputs.shape[0] == 2 * 6
    assert translate_held_out(family, prepared, 2, guide="reference")[3] == 1 + 2 * 2


def test_relgan_walks_alpha_from_the_source_to_the_whole_change(data, checkpoints):
    family = loaded(checkpoints, "relgan")
    prepared = load_prepared(data / "digit_domains")
    grid, outputs, _, columns = translate_held_out(family, prepared, 3, walk_steps=5, attribute="bold")
    assert columns == 6 and outputs.shape == (3 * 5, 3, 32, 32)
    rows = torch.from_numpy(grid).view(3, columns, 3, 32, 32)
    batch = next(held_out_batches(prepared, 3, 3))
    bold = prepared.attribute_names.index("bold")
    change = torch.zeros(3, 5)
    change[:, bold] = 1 - 2 * batch.attributes[:, bold]  # flipping: +1 where thin, -1 where bold
    for step, alpha in enumerate(torch.linspace(0, 1, 5).tolist()):
        expected = family.interpolate(batch.images, change, alpha).clamp(-1, 1)
        torch.testing.assert_close(rows[:, 1 + step], expected, atol=1e-5, rtol=0)


def test_sampling_options_that_do_not_fit_the_family_are_refused(data, checkpoints):
    prepared = load_prepared(data / "digit_domains")
    with pytest.raises(GanzooError, match=r"--attribute stripes: not an attribute .*known: red, green, blue, bold"):
        translate_held_out(loaded(checkpoints, "relgan"), prepared, 2, walk_steps=3, attribute="stripes")
    with pytest.raises(GanzooError, match="--interpolate: family stargan has no attribute interpolation"):
        translate_held_out(loaded(checkpoints, "stargan"), prepared, 2, walk_steps=3)
    with pytest.raises(GanzooError, match="--guide sideways: expected one of reference, latent"):
        translate_held_out(loaded(checkpoints, "stargan_v2"), prepared, 2, guide="sideways")


@pytest.fixture
def project(tmp_path, data):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def grid_cells(path: Path) -> tuple[int, int]:
    width, height = Image.open(path).size
    return width // CELL, height // CELL


def test_cli_writes_latent_guided_grids_and_relgan_walks(project, data, checkpoints):
    domains = ["--set", f"data.prepared_dir={data / 'digit_domains'}"]
    latent = ganzoo("sample", "--checkpoint", str(checkpoints["stargan_v2"]), "--guide", "latent", "--styles", "2",
                    "-n", "4", "--out", "latent.png", *domains, cwd=project)
    assert latent.returncode == 0, latent.stderr
    assert "wrote a grid of 4 rows of 7 images" in latent.stdout
    assert grid_cells(project / "latent.png") == (7, 4)
    walk = ganzoo("sample", "--checkpoint", str(checkpoints["relgan"]), "--interpolate", "--walk-steps", "4",
                  "--attribute", "light_background", "-n", "3", "--out", "walk.npz", *domains, cwd=project)
    assert walk.returncode == 0, walk.stderr
    assert np.load(project / "walk.npz")["images"].shape == (3 * 4, 3, 32, 32)


def test_cli_refuses_a_guide_for_a_family_without_style_codes(project, data, checkpoints):
    result = ganzoo("sample", "--checkpoint", str(checkpoints["relgan"]), "--guide", "latent",
                    "--set", f"data.prepared_dir={data / 'digit_domains'}", cwd=project)
    assert result.returncode != 0
    assert "--guide latent: family relgan has no style codes (munit and stargan_v2 do)" in result.stderr
    assert "Traceback" not in result.stderr and not (project / "samples.npz").exists()
