"""The family registry: every module in this package registers its family by name.

Modules are discovered, so adding a family is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from components.errors import ConfigError
from components.families.base import (DataSpec, DomainCondition, ExemplarCondition, Family, ImageBatch, Phase, RealSplit, TaskKind,
                                      one_hot_maps)

_REGISTRY: dict[str, type[Family]] = {}
_DISCOVERED = False


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` trainable by its ``name``."""
    for attr in ("name", "task", "paper", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"family {cls.__name__} does not declare {attr}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"family name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    _DISCOVERED = True


def family_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_family(name: str) -> type[Family]:
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown family {name!r} (expected one of: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def build_family(name: str, spec: DataSpec, overrides: dict[str, Any] | None = None) -> Family:
    """A family instance with its default config updated by ``overrides``."""
    from components.config import build_family_config

    cls = get_family(name)
    return cls(build_family_config(cls, dict(overrides or {}), f"overrides.{name}"), spec)


__all__ = ["DataSpec", "DomainCondition", "ExemplarCondition", "Family", "ImageBatch", "Phase", "RealSplit", "TaskKind", "build_family", "family_names",
           "get_family", "one_hot_maps", "register"]
