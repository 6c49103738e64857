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
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.errors import CheckpointError, ConfigError
from components.families import DataSpec, Family, build_family

STATE_FILE, CONFIG_FILE, COMPLETE_FILE, HISTORY_FILE = "state.pt", "config.json", "COMPLETE", "history.json"


@dataclass
class TrainingState:
    """What the trainer must restore besides the family's networks and optimizers."""

    step: int = 0
    rng: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    scaler: dict[str, float | int] = dataclasses.field(default_factory=dict)  # fp16's GradScaler; empty otherwise
    elapsed_s: float = 0.0  # training wall time so far, over every resume: what train.max_seconds counts


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
    if state.scaler:  # only fp16 runs have one: other checkpoints stay byte-for-byte what they were
        payload["scaler"] = state.scaler
    if state.elapsed_s:
        payload["elapsed_s"] = float(state.elapsed_s)
    torch.save(payload, directory / STATE_FILE)
    meta = {
        "family": family.name,
        "config": _jsonable(dataclasses.asdict(family.config)),
        "spec": dataclasses.asdict(family.spec),
        "step": state.step,
        **({"elapsed_s": round(state.elapsed_s, 3)} if state.elapsed_s else {}),
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
    path = directory / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({_first_line(exc)})") from None
    # every reader indexes these: a hand-edited or foreign config.json must fail here, as one line
    if not (isinstance(meta, dict) and isinstance(meta.get("family"), str) and isinstance(meta.get("config"), dict)
            and isinstance(meta.get("spec"), dict)):
        raise CheckpointError(f"{path}: not a ganzoo checkpoint config; expected a mapping with family, config "
                              "and spec")
    return meta


def require_family(directory: str | Path, family: str) -> dict[str, Any]:
    """The checkpoint's meta, refusing a checkpoint of another family than ``family``."""
    meta = read_checkpoint_meta(directory)
    if meta["family"] != family:
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: checkpoint of family {meta['family']!r}, "
                              f"expected {family!r}")
    return meta


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


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
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses any pickled global before calling it: the payload never ran
        raise CheckpointError(f"{path}: refused: it holds pickled Python objects, not only tensors and numbers "
                              "(a tampered or foreign file); expected a ganzoo checkpoint state") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load checkpoint state ({_first_line(exc)})") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("nets"), dict) and "step" in payload):
        raise CheckpointError(f"{path}: not a ganzoo checkpoint state; expected nets, optimizers and step")
    return payload


def _plain(value: Any) -> Any:
    """``value`` as config.json holds it (tuples as lists), so saved and live configs compare equal."""
    return json.loads(json.dumps(_jsonable(value), sort_keys=True, default=str))


def _differences(saved: dict[str, Any], live: dict[str, Any]) -> str:
    keys = sorted(k for k in set(saved) | set(live) if saved.get(k) != live.get(k))
    return ", ".join(f"{k} {saved.get(k)!r} vs {live.get(k)!r}" for k in keys[:4]) + (", ..." if len(keys) > 4 else "")


def _check_matches(directory: Path, meta: dict[str, Any], family: Family) -> None:
    """Refuse a checkpoint trained on other data (spec) than ``family`` was built for."""
    if meta["family"] != family.name:
        raise CheckpointError(f"{directory}: checkpoint of family {meta['family']!r}, not {family.name!r}")
    try:
        saved = _plain(dataclasses.asdict(DataSpec(**meta["spec"])))  # fills fields older checkpoints lack
    except TypeError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: spec is not a data spec ({_first_line(exc)})") from None
    live = _plain(dataclasses.asdict(family.spec))
    if saved != live:
        raise CheckpointError(f"{directory}: checkpoint of {family.name} for other data (checkpoint vs expected: "
                              f"{_differences(saved, live)})")


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if hasattr(value, "shape") else type(value).__name__


def _load_nets(directory: Path, meta: dict[str, Any], family: Family, saved: dict[str, Any]) -> None:
    """Load each network, refusing before any is touched weights whose names or shapes differ (other sizes)."""
    config = _differences(_plain(meta["config"]), _plain(dataclasses.asdict(family.config)))
    for name, module in family.nets.items():
        state = saved.get(name)
        mine = module.state_dict()
        problem = None
        if not isinstance(state, dict):
            problem = f"no weights for network {name!r}"
        elif set(state) != set(mine):
            problem = f"network {name!r} has other layers ({sorted(set(state) ^ set(mine))[0]!r})"
        else:
            wrong = [k for k in mine if getattr(state[k], "shape", None) != getattr(mine[k], "shape", None)]
            if wrong:
                problem = (f"network {name!r}: {wrong[0]} is {_shape(state[wrong[0]])} in the checkpoint, "
                           f"{_shape(mine[wrong[0]])} expected")
        if problem:
            raise CheckpointError(f"{directory}: checkpoint of {family.name} does not fit: {problem}"
                                  + (f" (config checkpoint vs expected: {config})" if config else ""))
    for name, module in family.nets.items():
        module.load_state_dict(saved[name])


def restore_into(
    directory: str | Path, family: Family, optimizers: dict[str, torch.optim.Optimizer] | None = None
) -> TrainingState:
    """Load networks (and optimizers) saved in ``directory`` into an already built family.

    A checkpoint of another family, of other data (spec) or of other network sizes is refused, naming both.
    """
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    _check_matches(directory, meta, family)
    payload = load_state(directory)
    _load_nets(directory, meta, family, payload["nets"])
    saved_optimizers = payload.get("optimizers")
    for name, opt in (optimizers or {}).items():
        try:
            opt.load_state_dict(saved_optimizers[name])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{directory}: optimizer {name!r} does not fit this {family.name} "
                                  f"({_first_line(exc)})") from None
    scaler = payload.get("scaler")
    elapsed = payload.get("elapsed_s", 0.0)
    return TrainingState(step=int(payload["step"]), rng=payload.get("rng", {}),
                         scaler=scaler if isinstance(scaler, dict) else {},
                         elapsed_s=float(elapsed) if isinstance(elapsed, (int, float)) else 0.0)


def load_family(directory: str | Path, family: str | None = None) -> tuple[Family, dict[str, Any]]:
    """Rebuild a family from its checkpoint alone (by name and resolved config); with ``family``, refuse a
    checkpoint of any other family."""
    directory = resolve_checkpoint_dir(directory)
    meta = read_checkpoint_meta(directory) if family is None else require_family(directory, family)
    try:
        built = build_family(meta["family"], DataSpec(**meta["spec"]), meta["config"])
    except (ConfigError, TypeError) as exc:  # an unknown family or hyperparameter in a foreign config.json
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot rebuild the family ({_first_line(exc)})") from None
    restore_into(directory, built)
    return built, meta


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
    return max(candidates, key=_completed_step)


def _completed_step(directory: Path) -> int:
    text = (directory / COMPLETE_FILE).read_text().strip() or "0"
    if not text.isdigit():
        raise CheckpointError(f"{directory / COMPLETE_FILE}: holds {text[:40]!r}; expected the step number")
    return int(text)
