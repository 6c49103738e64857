"""Checkpoints: every module, optimizer, the step counter and RNG state, with the resolved config.

Layout of a checkpoint directory:
  state.pt       torch.save of plain tensors and numbers (loaded with weights_only=True)
  config.json    family name, resolved family config, data spec, data hash, step
  COMPLETE       written last; a directory without it is never resumed from
  samples.png    (optional) a grid of generated images at that step
  history.json   (optional) the reported losses of every step so far: [{"step": 10, "d_loss": ...}, ...]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.errors import CheckpointError
from components.families import DataSpec, Family, build_family

STATE_FILE, CONFIG_FILE, COMPLETE_FILE, HISTORY_FILE = "state.pt", "config.json", "COMPLETE", "history.json"


@dataclass
class TrainingState:
    """What the trainer must restore besides the family's networks and optimizers."""

    step: int = 0
    rng: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


def save_checkpoint(
    directory: str | Path,
    family: Family,
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainingState,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint into ``directory`` (created; must be empty or absent)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "nets": {name: module.state_dict() for name, module in family.nets.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "step": state.step,
        "rng": state.rng,
    }
    torch.save(payload, directory / STATE_FILE)
    meta = {
        "family": family.name,
        "config": _jsonable(dataclasses.asdict(family.config)),
        "spec": dataclasses.asdict(family.spec),
        "step": state.step,
        **(extra or {}),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (directory / COMPLETE_FILE).write_text(f"{state.step}\n")
    return directory


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not (directory / COMPLETE_FILE).is_file():
        raise CheckpointError(f"{directory}: not a complete ganzoo checkpoint (no {COMPLETE_FILE} marker)")
    try:
        return json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: unreadable checkpoint config ({exc})") from None


def read_history(directory: str | Path) -> list[dict[str, Any]]:
    """The loss history saved with a checkpoint; empty for checkpoints that have none."""
    path = Path(directory) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable loss history ({exc})") from None
    return [row for row in rows if isinstance(row, dict) and isinstance(row.get("step"), int)]


def load_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot load checkpoint state ({exc})") from None


def restore_into(
    directory: str | Path, family: Family, optimizers: dict[str, torch.optim.Optimizer] | None = None
) -> TrainingState:
    """Load networks (and optimizers) saved in ``directory`` into an already built family."""
    meta = read_checkpoint_meta(directory)
    if meta["family"] != family.name:
        raise CheckpointError(f"{directory}: checkpoint of family {meta['family']!r}, not {family.name!r}")
    payload = load_state(directory)
    for name, module in family.nets.items():
        module.load_state_dict(payload["nets"][name])
    for name, opt in (optimizers or {}).items():
        opt.load_state_dict(payload["optimizers"][name])
    return TrainingState(step=int(payload["step"]), rng=payload.get("rng", {}))


def load_family(directory: str | Path) -> tuple[Family, dict[str, Any]]:
    """Rebuild a family from its checkpoint alone (by name and resolved config)."""
    directory = resolve_checkpoint_dir(directory)
    meta = read_checkpoint_meta(directory)
    family = build_family(meta["family"], DataSpec(**meta["spec"]), meta["config"])
    restore_into(directory, family)
    return family, meta


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or the newest complete one under a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / COMPLETE_FILE).is_file():
        return path
    candidates = sorted(p.parent for p in path.rglob(COMPLETE_FILE))
    if not candidates:
        raise CheckpointError(f"{path}: holds no complete checkpoint")
    return max(candidates, key=lambda p: int((p / COMPLETE_FILE).read_text().strip() or 0))
