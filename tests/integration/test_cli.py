"""The ganzoo command line as a user runs it: a fresh process, its own local Ray cluster."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GANZOO = str(Path(sys.executable).with_name("ganzoo"))


def ganzoo(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([GANZOO, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_families_lists_every_family_with_task_and_paper(project):
    result = ganzoo("families", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert {"gan", "dcgan", "wgan_gp", "cgan"} <= set(rows)
    assert "class_conditional" in rows["cgan"] and "Mirza" in rows["cgan"]
    assert "unconditional" in rows["wgan_gp"] and "Gulrajani" in rows["wgan_gp"]


@pytest.mark.parametrize("args, message", [
    (["--set", "train.workers=two"], "train.workers: expected a positive integer, got 'two'"),
    (["--family", "nogan"], "families[0]: unknown family 'nogan'"),
    (["--set", "overrides={dcgan: {lrr: 1}}"], "overrides.dcgan.lrr: unknown hyperparameter of dcgan"),
    (["--steps", "0"], "train.steps: expected a positive integer, got 0"),
    (["--set", "data.source=folder:/no/such/dir"], "/no/such/dir"),
])
def test_train_refuses_bad_input_with_one_line(project, args, message):
    result = ganzoo("train", *args, cwd=project)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (project / "runs").exists()


def test_sample_refuses_a_missing_checkpoint(project):
    result = ganzoo("sample", "--checkpoint", "nowhere", cwd=project)
    assert result.returncode == 2 and "nowhere: no such checkpoint" in result.stderr


@pytest.mark.integration
def test_train_then_sample_a_conditional_family(project):
    trained = ganzoo("train", "--family", "cgan", "--workers", "2", "--steps", "3",
                     "--set", "train.batch_size=16", "--set", "train.checkpoint_every=3", cwd=project)
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = re.search(r"checkpoint: (\S+)", trained.stdout).group(1)
    assert Path(checkpoint).is_dir() and "cgan: finished 3 steps" in trained.stdout

    sampled = ganzoo("sample", "--checkpoint", checkpoint, "-n", "50", "--out", "s.npz", cwd=project)
    assert sampled.returncode == 0, sampled.stderr
    with np.load(project / "s.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.shape == (50, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1
    assert np.bincount(labels, minlength=10).tolist() == [5] * 10


def test_conditional_family_on_unlabelled_data_is_refused_before_training(project):
    rng = np.random.default_rng(0)
    np.savez(project / "unlabelled.npz", images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    result = ganzoo("train", "--family", "cgan", "--set", "data.source=npz:unlabelled.npz", cwd=project)
    assert result.returncode == 2
    assert "family cgan is class-conditional and needs labelled data" in result.stderr
    assert not (project / "runs").exists()
