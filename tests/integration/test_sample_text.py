"""`ganzoo sample --text` and `--interpolate` as a user runs them: a fresh process per command.

Most tests sample tiny untrained checkpoints written here (no Ray); the last
one trains gan_t2i for two steps on a real local Ray cluster and samples it by
family name.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.families import DataSpec, build_family, get_family
from components.training.checkpoint import TrainingState, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))
CELL = 28 + 2  # make_grid: each 28 px image plus 2 px padding


def ganzoo(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny untrained checkpoints of gan_t2i and dcgan on 28 x 28 digits."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name in ("gan_t2i", "dcgan"):
        torch.manual_seed(0)
        family = build_family(name, DataSpec(1, 28, 10), get_family(name).tiny)
        paths[name] = save_checkpoint(root / name, family, family.build_optimizers(), TrainingState(step=1))
    return paths


def grid_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size  # (width, height)


def test_sample_text_writes_a_grid_of_that_caption(project, checkpoints):
    result = ganzoo("sample", "--checkpoint", str(checkpoints["gan_t2i"]), "--text", "a thin two", "-n", "12",
                    "--out", "two.png", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "wrote a grid of 12 images [1, 28, 28]" in result.stdout
    assert grid_size(project / "two.png") == (4 * CELL + 2, 3 * CELL + 2)

    result = ganzoo("sample", "--checkpoint", str(checkpoints["gan_t2i"]), "--text", "An eight leaning left.",
                    "--out", "eight.npz", cwd=project)
    assert result.returncode == 0, result.stderr
    with np.load(project / "eight.npz") as npz:
        assert npz["images"].shape == (64, 1, 28, 28) and npz["labels"].tolist() == [8] * 64


def test_sample_text_refuses_an_unknown_word_in_one_line(project, checkpoints):
    result = ganzoo("sample", "--checkpoint", str(checkpoints["gan_t2i"]), "--text", "a thin twelve",
                    "--out", "x.png", cwd=project)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: text: unknown word 'twelve' (known: a, an, thin")
    assert not (project / "x.png").exists()


def test_text_is_refused_for_a_family_without_text(project, checkpoints):
    result = ganzoo("sample", "--checkpoint", str(checkpoints["dcgan"]), "--text", "a one", cwd=project)
    assert result.returncode == 2 and "family dcgan is unconditional; only text-conditional" in result.stderr


def test_interpolate_writes_one_walk_per_row(project, checkpoints):
    result = ganzoo("sample", "--checkpoint", str(checkpoints["dcgan"]), "--interpolate", "-n", "3",
                    "--spherical", "--out", "walk.png", cwd=project)
    assert result.returncode == 0, result.stderr
    assert grid_size(project / "walk.png") == (8 * CELL + 2, 3 * CELL + 2)  # 8 steps across, 3 walks down

    result = ganzoo("sample", "--checkpoint", str(checkpoints["dcgan"]), "--interpolate", "--walk-steps", "4",
                    "--out", "walk.npz", cwd=project)
    assert result.returncode == 0, result.stderr
    with np.load(project / "walk.npz") as npz:
        images = npz["images"]
    assert images.shape == (32, 1, 28, 28)
    first, last = images.reshape(8, 4, -1)[:, 0], images.reshape(8, 4, -1)[:, -1]
    assert not np.allclose(first, last)  # each row really goes somewhere


@pytest.mark.integration  # MLflow: the registry store is set up by the command
def test_sample_text_from_a_model_saved_by_mlflow(project, checkpoints):
    import mlflow.pytorch

    from components.training.checkpoint import load_family

    family, _ = load_family(checkpoints["gan_t2i"])
    family.nets.eval()
    exported = family.export_generator().eval()
    model = project / "model"
    mlflow.pytorch.save_model(exported, str(model), input_example=exported.example_inputs(4).numpy(),
                              serialization_format="pt2", pip_requirements=["torch"],
                              metadata={"latent_dim": exported.latent_dim, "num_classes": 0})
    result = ganzoo("sample", "--model", str(model), "--text", "a thick seven", "-n", "4", "--out", "m.npz",
                    cwd=project)
    assert result.returncode == 0, result.stderr
    with np.load(project / "m.npz") as npz:
        from_model = npz["images"]
    result = ganzoo("sample", "--checkpoint", str(checkpoints["gan_t2i"]), "--text", "a thick seven", "-n", "4",
                    "--out", "c.npz", cwd=project)
    with np.load(project / "c.npz") as npz:
        assert np.allclose(from_model, npz["images"], atol=1e-5)  # the same seed draws the same latents


def test_sample_by_family_needs_a_finished_training(project):
    result = ganzoo("sample", "--family", "gan_t2i", "--text", "a one", cwd=project)
    assert result.returncode == 2
    assert "training.json: not found; run `ganzoo train --family gan_t2i` first" in result.stderr
    result = ganzoo("sample", "--family", "gan_t2i", "--checkpoint", "x", cwd=project)
    assert result.returncode == 2 and "give exactly one of" in result.stderr


@pytest.mark.integration
def test_train_then_sample_gan_t2i_by_family(project):
    trained = ganzoo("train", "--family", "gan_t2i", "--workers", "2", "--steps", "2", "--no-progress",
                     "--set", "train.batch_size=16", "--set", "train.checkpoint_every=2", cwd=project)
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = re.search(r"checkpoint: (\S+)", trained.stdout).group(1)
    record = json.loads((project / "reports" / "gan_t2i" / "training.json").read_text())
    assert record["checkpoint"] == checkpoint

    sampled = ganzoo("sample", "--family", "gan_t2i", "--text", "a thick seven leaning right", "-n", "16",
                     "--out", "seven.png", cwd=project)
    assert sampled.returncode == 0, sampled.stderr
    assert grid_size(project / "seven.png") == (4 * CELL + 2, 4 * CELL + 2)
    walked = ganzoo("sample", "--family", "gan_t2i", "--interpolate", "--text", "a thin one", "--out", "walk.png",
                    cwd=project)
    assert walked.returncode == 0, walked.stderr
    assert grid_size(project / "walk.png") == (8 * CELL + 2, 8 * CELL + 2)
