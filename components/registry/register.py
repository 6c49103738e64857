"""Register a logged generator as a version of ``<dataset>-<family>``, with its lineage, as the challenger.

Idempotent: a version is found again by its ``ganzoo.key`` tag, so a retrain
re-run after a crash between training and registration registers nothing new.
The check and the registration happen under the model's lock, so two
processes registering the same key make one version.
"""

from __future__ import annotations

from typing import Any

from components.config import Params
from components.errors import GanzooError
from components.registry.runs import KEY_TAG, LoggedRun
from components.registry.tracking import client_for, model_lock, with_store_retries

MEASUREMENT_KEYS = ("fid", "fid_std", "kid", "kid_std")
LINEAGE_TAGS = ("family", "dataset", "data_version", "params_hash", "seed", "git_commit", "extractor", "checkpoint",
                "training_run", KEY_TAG)


def registered_model_name(dataset: str, family: str) -> str:
    """``mnist5k-dcgan``: one registered model per dataset and family."""
    return f"{dataset}-{family}"


def version_tags(run_tags: dict[str, str], evaluation: dict[str, Any], run: LoggedRun) -> dict[str, str]:
    """What a model version carries: the run's lineage, its protocol, the gate's numbers, the generator's shape."""
    metrics = evaluation.get("metrics", {})
    missing = [key for key in MEASUREMENT_KEYS if key not in metrics]
    if missing:
        raise GanzooError(f"evaluation report: metrics lack {', '.join(missing)} (needed by the promotion gate)")
    return {
        **{key: run_tags[key] for key in LINEAGE_TAGS if key in run_tags},
        **{key: value for key, value in run_tags.items() if key.startswith("protocol.")},
        **{key: repr(float(metrics[key])) for key in MEASUREMENT_KEYS},
        "run_id": run.run_id,
        "latent_dim": str(run.latent_dim),
        "num_classes": str(run.num_classes),
        "image_shape": "x".join(map(str, run.image_shape)),
    }


def collapse_reason(metrics: dict[str, float], num_classes: int, min_classes: int) -> str | None:
    """Why a noise-to-image generator counts as collapsed (its samples cover fewer than ``min_classes`` of the
    data's ``num_classes`` classes), or None. Data with fewer classes than that cannot show a collapse."""
    covered = metrics.get("classes_covered")
    if covered is None or num_classes < max(min_classes, 2) or covered >= min_classes:
        return None
    return (f"diverged: the generator collapsed: its samples cover {covered:.0f} of {num_classes} classes "
            f"(registry.min_classes_covered is {min_classes})")


def find_version_by_key(client, model_name: str, key: str):
    """The model version registered for this idempotency key, or None."""
    found = client.search_model_versions(f"name = '{model_name}' and tags.`{KEY_TAG}` = '{key}'")
    return min(found, key=lambda v: int(v.version)) if found else None


@with_store_retries
def register_version(params: Params, family: str, training: dict[str, Any], evaluation: dict[str, Any],
                     run: LoggedRun) -> str:
    """Register ``run``'s generator as a new version (the challenger) and return its version number.

    With a version of the same key already registered, return that one and
    change nothing. ``training`` is accepted for the pipeline's uniform
    signature; the lineage comes from the run's tags, which were made from it.
    """
    import mlflow

    client = client_for(params.registry)
    name = registered_model_name(params.data.dataset_name(), family)
    with model_lock(params.registry, name):
        existing = find_version_by_key(client, name, run.key)
        if existing is not None:
            return str(existing.version)
        tags = version_tags(client.get_run(run.run_id).data.tags, evaluation, run)
        version = mlflow.register_model(run.model_uri, name, tags=tags)
        client.set_registered_model_alias(name, params.registry.challenger_alias, str(version.version))
    return str(version.version)
