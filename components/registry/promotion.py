"""The promotion gate, and applying it to the registry's ``champion`` alias.

``decide`` is pure: a challenger's and a champion's measurements and a policy
in, a decision with its reason out. Everything after it (reading the
measurements back from version tags, moving aliases, recording decisions,
rolling back) talks to MLflow, under a per-model file lock so that two
processes promoting at once still end with one champion: the better one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from components.config import Params, RegistryConfig
from components.errors import GanzooError
from components.registry.tracking import client_for, model_lock, with_store_retries

PROTOCOL_KEYS = ("extractor", "data_version", "num_samples")  # what makes two FIDs comparable

PROMOTED, KEPT, REMEASURE, ALREADY, ROLLED_BACK = (
    "promoted", "kept_challenger", "remeasure_champion", "already_champion", "rolled_back")

DECISION_TAG, REASON_TAG, DECIDED_AT_TAG = "ganzoo.decision", "ganzoo.reason", "ganzoo.decided_at"
PREVIOUS_TAG, ROLLED_BACK_FROM_TAG, ROLLED_BACK_TAG = (
    "ganzoo.previous_champion", "ganzoo.rolled_back_from", "ganzoo.rolled_back")


@dataclass(frozen=True)
class Measurement:
    """A version's FID and KID (with standard deviations) and the protocol they were measured under."""

    version: str
    fid: float
    fid_std: float
    kid: float
    kid_std: float
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """``outcome``: promoted | kept_challenger | remeasure_champion | already_champion."""

    promote: bool
    reason: str
    outcome: str = ""

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", PROMOTED if self.promote else KEPT)


# -- the gate (pure) ------------------------------------------------------------------------------

def protocol_differences(challenger: dict[str, Any], champion: dict[str, Any]) -> list[str]:
    """``num_samples 300 vs 5000``-style lines for every protocol field that differs (missing counts)."""
    return [f"{key} {challenger.get(key, 'unrecorded')} vs {champion.get(key, 'unrecorded')}"
            for key in PROTOCOL_KEYS
            if key not in challenger or key not in champion or str(challenger[key]) != str(champion[key])]


def decide(challenger: Measurement, champion: Measurement | None, min_improvement: float = 0.0,
           noise_sigmas: float = 2.0) -> Decision:
    """Promote when the challenger's FID gain beats max(min_improvement, noise_sigmas x combined std).

    Lower FID is better. FIDs measured under different protocols (extractor,
    real data version, sample count) are never compared: the decision then asks
    for the champion to be re-measured under the challenger's protocol.
    """
    if champion is not None and str(champion.version) == str(challenger.version):
        return Decision(False, f"version {challenger.version} is already the champion", ALREADY)
    if not _finite(challenger.fid, challenger.fid_std):
        return Decision(False, f"version {challenger.version} has no finite FID and std "
                               f"({challenger.fid}, {challenger.fid_std})")
    if champion is None:
        return Decision(True, f"no champion yet: version {challenger.version} (FID {challenger.fid:.3f}) "
                              f"becomes the first")
    differences = protocol_differences(challenger.protocol, champion.protocol)
    if differences:
        return Decision(False, f"not comparable with champion version {champion.version}: measured under another "
                               f"protocol ({'; '.join(differences)}); re-measure the champion under the "
                               f"challenger's protocol", REMEASURE)
    if not _finite(champion.fid, champion.fid_std):
        return Decision(True, f"champion version {champion.version} has no finite FID ({champion.fid})")
    return _compare(challenger, champion, min_improvement, noise_sigmas)


def _compare(challenger: Measurement, champion: Measurement, min_improvement: float,
             noise_sigmas: float) -> Decision:
    gain = champion.fid - challenger.fid
    combined_std = math.hypot(challenger.fid_std, champion.fid_std)
    margin = max(min_improvement, noise_sigmas * combined_std)
    versus = f"FID {challenger.fid:.3f} vs champion version {champion.version}'s {champion.fid:.3f}"
    if gain <= 0:
        return Decision(False, f"worse: {versus} (gain {gain:.3f})")
    if gain <= margin:
        return Decision(False, f"within noise: {versus}, gain {gain:.3f} <= margin {margin:.3f} = max(min "
                               f"improvement {min_improvement:g}, {noise_sigmas:g} x combined std {combined_std:.3f})")
    return Decision(True, f"better: {versus}, gain {gain:.3f} > margin {margin:.3f}")


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# -- measurements in the registry -----------------------------------------------------------------

def measurement_from_tags(version: str, tags: dict[str, str]) -> Measurement:
    """A version's Measurement from the tags ``register_version`` wrote on it."""
    try:
        numbers = {key: float(tags[key]) for key in ("fid", "fid_std", "kid", "kid_std")}
    except (KeyError, ValueError):
        raise GanzooError(f"model version {version}: no fid, fid_std, kid and kid_std tags (not registered by "
                          f"ganzoo?)") from None
    protocol = {key.removeprefix("protocol."): value for key, value in tags.items() if key.startswith("protocol.")}
    return Measurement(str(version), protocol=protocol, **numbers)


def measurement_from_report(version: str, evaluation: dict[str, Any]) -> Measurement:
    """A Measurement from an evaluation report dict (e.g. of a re-measured champion)."""
    metrics = evaluation["metrics"]
    return Measurement(str(version), float(metrics["fid"]), float(metrics["fid_std"]), float(metrics["kid"]),
                       float(metrics["kid_std"]), dict(evaluation.get("protocol", {})))


def version_measurement(model_name: str, version: str, client=None) -> Measurement:
    """The Measurement of one registered version (``client`` default: the configured store)."""
    return measurement_from_tags(version, _model_version(client or _default_client(), model_name, version).tags)


def champion_measurement(model_name: str, alias: str = "champion", client=None) -> Measurement | None:
    """The Measurement of the version under ``alias``, or None when there is no champion."""
    client = client or _default_client()
    version = alias_version(client, model_name, alias)
    return None if version is None else version_measurement(model_name, version, client)


def alias_version(client, model_name: str, alias: str) -> str | None:
    """The version an alias points to, None without it; a missing model is a one-line error."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise GanzooError(f"registered model {model_name!r} does not exist; run the retrain first") from None
        raise
    version = aliases.get(alias) if isinstance(aliases, dict) else None
    return None if version is None else str(version)


def _model_version(client, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise GanzooError(f"{model_name}: no model version {version}") from None
        raise


def _default_client():
    from mlflow import MlflowClient

    return MlflowClient()


def _registry(settings: Params | RegistryConfig) -> RegistryConfig:
    return settings.registry if isinstance(settings, Params) else settings


# -- applying decisions ---------------------------------------------------------------------------

def promote(client, cfg: RegistryConfig, model_name: str, version: str, decision: Decision) -> str | None:
    """Record ``decision`` on ``version`` and move the champion alias if it promotes; returns the champion after.

    Call it under ``model_lock`` with a decision made from the champion read
    inside that lock. The previous champion is remembered on the new one, for
    ``rollback``; the challenger alias is dropped once its version is champion.
    """
    current = alias_version(client, model_name, cfg.champion_alias)
    if decision.outcome == ALREADY:
        return current
    tags = {DECISION_TAG: decision.outcome, REASON_TAG: decision.reason, DECIDED_AT_TAG: _now()}
    if decision.promote and current not in (None, str(version)):
        tags[PREVIOUS_TAG] = current
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    if not decision.promote:
        return current
    stale = {PREVIOUS_TAG} if current is None else set()  # a first champion has nothing to roll back to
    for key in (stale | {ROLLED_BACK_TAG}) & set(_model_version(client, model_name, version).tags):
        client.delete_model_version_tag(model_name, str(version), key)
    client.set_registered_model_alias(model_name, cfg.champion_alias, str(version))
    if alias_version(client, model_name, cfg.challenger_alias) == str(version):
        client.delete_registered_model_alias(model_name, cfg.challenger_alias)
    return str(version)


@with_store_retries
def promote_version(settings: Params | RegistryConfig, model_name: str, version: str,
                    champion: Measurement | None = None, force: bool = False) -> dict[str, Any]:
    """Run the gate for ``version`` against the current champion and apply it.

    ``champion``: a fresh measurement of the champion under the challenger's
    protocol (after a ``remeasure_champion`` outcome); used only if it is still
    the champion. A version once rolled back is not promoted again unless
    ``force``. Returns {decision, reason, promoted, champion}, and the
    champion's checkpoint when the decision is ``remeasure_champion``.
    """
    cfg = _registry(settings)
    client = client_for(cfg)
    with model_lock(cfg, model_name):
        challenger_version = _model_version(client, model_name, version)
        decision = _rolled_back_decision(challenger_version, force) or decide(
            measurement_from_tags(version, challenger_version.tags),
            _champion_now(client, cfg, model_name, champion), cfg.min_improvement, cfg.noise_sigmas)
        champion_after = promote(client, cfg, model_name, version, decision)
        outcome = {"decision": decision.outcome, "reason": decision.reason, "promoted": decision.promote,
                   "champion": champion_after}
        if decision.outcome == REMEASURE:  # what the caller evaluates before calling again with ``champion``
            outcome["champion_checkpoint"] = _model_version(client, model_name, champion_after).tags.get("checkpoint")
    return outcome


def _champion_now(client, cfg: RegistryConfig, model_name: str, fresh: Measurement | None) -> Measurement | None:
    current = alias_version(client, model_name, cfg.champion_alias)
    if current is None:
        return None
    if fresh is not None and str(fresh.version) == current:
        return fresh
    return version_measurement(model_name, current, client)


def _rolled_back_decision(model_version, force: bool) -> Decision | None:
    rolled_back_at = model_version.tags.get(ROLLED_BACK_TAG)
    if force or not rolled_back_at:
        return None
    return Decision(False, f"version {model_version.version} was rolled back from champion at {rolled_back_at}; "
                           f"not promoted again without force")


@with_store_retries
def rollback(settings: Params | RegistryConfig, model_name: str) -> dict[str, str]:
    """Make the champion's previous champion the champion again; returns {model, version, rolled_back_from}."""
    cfg = _registry(settings)
    client = client_for(cfg)
    with model_lock(cfg, model_name):
        current = alias_version(client, model_name, cfg.champion_alias)
        if current is None:
            raise GanzooError(f"{model_name}: no {cfg.champion_alias} to roll back")
        previous = _model_version(client, model_name, current).tags.get(PREVIOUS_TAG)
        if not previous:
            raise GanzooError(f"{model_name}: {cfg.champion_alias} version {current} has no previous champion "
                              f"to roll back to")
        _model_version(client, model_name, previous)  # still registered?
        client.set_model_version_tag(model_name, previous, ROLLED_BACK_FROM_TAG, current)
        for key, value in {ROLLED_BACK_TAG: _now(), DECISION_TAG: ROLLED_BACK,
                           REASON_TAG: f"rolled back: version {previous} is the champion again"}.items():
            client.set_model_version_tag(model_name, current, key, value)
        client.set_registered_model_alias(model_name, cfg.champion_alias, previous)
    return {"model": model_name, "version": previous, "rolled_back_from": current}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
