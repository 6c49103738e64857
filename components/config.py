"""params.yaml: the one configuration, validated on load.

Every failure is one line naming the file, the key path and what was expected,
e.g. ``params.yaml: train.workers: expected a positive integer, got 'two'``.
Family hyperparameter overrides are checked against the family's own config
dataclass, so an unknown or mistyped hyperparameter fails here, before any
cluster starts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from components.errors import ConfigError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    # inf passes ``> 0``; a GPU count or a promotion margin of inf is never meant
    return _is_number(value) and math.isfinite(value)


def _checked(predicate, expected: str):
    def check(value: Any) -> Any:
        if not predicate(value):
            raise ValueError(f"expected {expected}")
        return value

    return BeforeValidator(check)


PositiveInt = Annotated[int, _checked(lambda v: _is_int(v) and v > 0, "a positive integer")]
NonNegativeInt = Annotated[int, _checked(lambda v: _is_int(v) and v >= 0, "a non-negative integer")]
AnyInt = Annotated[int, _checked(_is_int, "an integer")]
PositiveFloat = Annotated[float, _checked(lambda v: _is_finite(v) and v > 0, "a positive number")]
NonNegativeFloat = Annotated[
    float, _checked(lambda v: _is_finite(v) and v >= 0, "a non-negative number")
]
OptionalPositiveFloat = Annotated[
    float | None, _checked(lambda v: v is None or (_is_finite(v) and v > 0), "a positive number or null")
]
Flag = Annotated[bool, _checked(lambda v: isinstance(v, bool), "true or false")]
Text = Annotated[str, _checked(lambda v: isinstance(v, str) and v != "", "a non-empty string")]
OptionalText = Annotated[
    str | None, _checked(lambda v: v is None or (isinstance(v, str) and v != ""), "a string or null")
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(_Section):
    source: Text = "mnist5k"
    image_size: Annotated[
        int | None, _checked(lambda v: v is None or (_is_int(v) and 4 <= v <= 1024), "null or an integer in 4..1024")
    ] = None
    prepared_dir: Text = "data/prepared"
    s3_endpoint_url: OptionalText = None
    # an attribute table's columns to use, in order (StarGAN's selected attributes); null: every column
    attributes: Annotated[list[str] | None, _checked(
        lambda v: v is None or (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)),
        "null or a non-empty list of attribute names")] = None
    name: OptionalText = None  # names registered models <name>-<family>; null derives it from the source
    dvc_remote: Text = ".dvc-remote"  # local directory (relative to the project root) or s3://bucket/prefix
    dvc_remote_endpoint_url: OptionalText = None

    def dataset_name(self) -> str:
        """``name``, or the last path component of the source (``mnist5k``, ``folder:/x/faces`` → ``faces``)."""
        if self.name:
            return self.name
        tail = self.source.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]
        tail = tail.removesuffix(".npz") or "data"
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in tail)


class TrainConfig(_Section):
    steps: PositiveInt = 600
    batch_size: PositiveInt = 64  # per worker
    workers: PositiveInt = 2
    cpus_per_worker: PositiveInt = 1
    gpus_per_worker: NonNegativeFloat = 0.0
    checkpoint_every: PositiveInt = 200
    report_every: PositiveInt = 10
    sample_every: PositiveInt = 200
    seed: AnyInt = 0
    # training wall time: stop at whichever of steps or seconds comes first (a fixed CPU allowance); null: steps
    max_seconds: OptionalPositiveFloat = None
    storage_path: Text = "runs"
    storage_endpoint_url: OptionalText = None
    max_failures: NonNegativeInt = 2
    keep_checkpoints: PositiveInt = 2
    ray_address: OptionalText = None
    placement: Annotated[str, _checked(lambda v: v in ("pack", "spread", "strict_spread"),
                                       "one of 'pack', 'spread', 'strict_spread'")] = "pack"
    # autocast of each phase's forward and loss; fp16 also scales the loss (GradScaler), bf16 needs no scaler
    precision: Annotated[str, _checked(lambda v: v in ("fp32", "bf16", "fp16"),
                                       "one of 'fp32', 'bf16', 'fp16'")] = "fp32"
    channels_last: Flag = False  # networks and image batches in NHWC: faster convolutions on tensor cores
    compile: Flag = False  # torch.compile the trained networks; checkpoints, generation and export are unchanged


class EvaluationConfig(_Section):
    num_samples: PositiveInt = 5000
    batch_size: PositiveInt = 500
    seed: AnyInt = 0
    inception_weights: OptionalText = None  # a local torch-fidelity Inception-v3 file; null trains a domain CNN
    extractor_epochs: PositiveInt = 3
    segmenter_epochs: PositiveInt = 4  # the segmentation-consistency segmenter of segmentation-to-image data
    cache_dir: Text = ".ganzoo-cache"  # domain extractors, one per data version
    reports_dir: Text = "reports"  # per family: training.json, metrics.json, samples.png, losses.png
    kid_subsets: PositiveInt = 50
    kid_subset_size: PositiveInt = 1000
    nearest_k: PositiveInt = 5
    fid_bootstrap: NonNegativeInt = 10  # resamples for the FID standard deviation used by the promotion gate


class RegistryConfig(_Section):
    tracking_uri: OptionalText = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    artifact_location: OptionalText = None  # e.g. s3://bucket/mlflow for new experiments; null: beside the db
    artifacts_endpoint_url: OptionalText = None  # S3-compatible store of the artifacts (MLFLOW_S3_ENDPOINT_URL)
    experiment: Text = "ganzoo"
    challenger_alias: Text = "challenger"
    champion_alias: Text = "champion"
    min_improvement: NonNegativeFloat = 0.0  # FID points a challenger must gain besides beating the noise
    noise_sigmas: NonNegativeFloat = 2.0  # promote only if the FID gain exceeds this many combined std devs
    # a noise-to-image generator whose samples cover fewer of the data's classes has collapsed: not registered
    min_classes_covered: NonNegativeInt = 2


class Params(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    families: Annotated[
        list[str], _checked(lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of family names")
    ] = Field(default_factory=lambda: ["dcgan"])
    overrides: Annotated[
        dict[str, dict[str, Any]],
        _checked(
            lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
            "a mapping of family name to a mapping of hyperparameters",
        ),
    ] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    def family_config(self, family: str) -> Any:
        """The family's config dataclass with this file's overrides applied."""
        from components.families import get_family

        return build_family_config(get_family(family), self.overrides.get(family, {}), f"overrides.{family}")

    def params_hash(self, family: str) -> str:
        """A stable hash of everything that shapes the trained model of ``family``."""
        cfg = dataclasses.asdict(self.family_config(family))
        train = self.train.model_dump(include={"steps", "batch_size", "workers", "seed"})
        data = self.data.model_dump(include={"source", "image_size"})
        if self.data.attributes is not None:  # only when set: the hashes of runs without it stay as they were
            data["attributes"] = self.data.attributes
        if self.train.max_seconds is not None:  # only when set, like attributes: step-bounded runs keep their hashes
            train["max_seconds"] = self.train.max_seconds
        if self.train.precision != "fp32":  # other numerics, another model; fp32 runs keep their hashes (and
            train["precision"] = self.train.precision  # channels_last and compile change speed, not the model)
        blob = json.dumps({"family": family, "config": cfg, "train": train, "data": data},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


_MAX_DEPTH, _MAX_NODES = 32, 100_000  # params.yaml nests 4 deep; the limits stop alias loops and alias bombs
_YAML_FAILURES = (
    yaml.YAMLError,
    ValueError,  # PyYAML's constructors: a date like 2020-13-45, an int beyond Python's 4300-digit limit
    OverflowError,
    RecursionError,  # PyYAML's composer recurses once per nesting level
)


def _shown(value: Any, limit: int = 100) -> str:
    """``repr(value)`` for a one-line message: cut to ``limit`` characters (repr escapes newlines)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str limit
        return "an integer too long to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(part: Any) -> str:
    """One key of a key path: as written when plain, else quoted so the message stays one readable line."""
    if isinstance(part, str) and part and part.isprintable() and len(part) <= 40:
        return part
    return _shown(part, 40)


def _check_shape(raw: Any, source: str) -> None:
    """Refuse nesting deeper than any params.yaml needs, and YAML aliases that contain themselves or expand to
    millions of values, before deepcopy, pydantic or repr recurse into them."""
    stack, seen = [(raw, ())], 0
    while stack:
        node, path = stack.pop()
        seen += 1
        if len(path) > _MAX_DEPTH or seen > _MAX_NODES:
            where = ".".join(_key(p) for p in path[:4]) + ("..." if len(path) > 4 else "")
            raise ConfigError(f"{source}: {where}: nested more than {_MAX_DEPTH} levels deep or more than "
                              f"{_MAX_NODES} values (a YAML alias inside its own anchor?); expected the shape of "
                              "params.yaml")
        if isinstance(node, dict):
            stack.extend((value, path + (key,)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, path + (index,)) for index, value in enumerate(node))


def _describe(error: dict) -> str:
    path = ".".join(_key(p) for p in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required key is missing"
    message = " ".join(error["msg"].removeprefix("Value error, ").split())
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping"
    return f"{path}: {message}, got {_shown(error['input'])}"


def _unknown_key_hint(model: type[BaseModel], loc: tuple) -> str:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return f" (expected one of: {', '.join(model.model_fields)})"


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise ConfigError with one line on failure."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    _check_shape(raw, source)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        hint = _unknown_key_hint(Params, error["loc"]) if error["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{source}: {_describe(error)}{hint}") from None
    _check_families(params, source)
    return params


def _check_families(params: Params, source: str) -> None:
    from components.families import family_names, get_family

    known = family_names()
    for index, name in enumerate(params.families):
        if name not in known:
            raise ConfigError(
                f"{source}: families[{index}]: unknown family {_shown(name)} (expected one of: {', '.join(known)})"
            )
    for name, overrides in params.overrides.items():
        if name not in known:
            raise ConfigError(f"{source}: overrides.{_key(name)}: unknown family (expected one of: {', '.join(known)})")
        try:
            build_family_config(get_family(name), overrides, f"overrides.{name}")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def build_family_config(family_cls: Any, overrides: dict[str, Any], where: str = "overrides") -> Any:
    """Instantiate ``family_cls.Config`` with ``overrides``; unknown or mistyped keys are errors."""
    config_cls = family_cls.Config
    types = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    values = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"{where}.{_key(key)}: unknown hyperparameter of {family_cls.name} "
                              f"(expected one of: {', '.join(names)})")
        try:
            values[key] = TypeAdapter(types[key]).validate_python(value, strict=_strict(value))
        except ValidationError:
            raise ConfigError(f"{where}.{key}: expected {_type_phrase(types[key])}, got {_shown(value)}") from None
        if _is_number(values[key]) and not (0 <= values[key] < float("inf")):
            raise ConfigError(f"{where}.{key}: expected a finite non-negative number, got {_shown(value)}")
    try:
        return config_cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None


def _type_phrase(annotation: Any) -> str:
    phrases = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if annotation in phrases:
        return phrases[annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        return "a list of " + _type_phrase(typing.get_args(annotation)[0]) .removeprefix("an ").removeprefix("a ") + "s"
    return str(annotation)


def _strict(value: Any) -> bool:
    # ints may stand for floats (lr: 1), but strings never stand for numbers
    return isinstance(value, (str, bool))


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 reads a float only with a dot (1.0e-4): ``lr: 2e-4`` would be the string '2e-4'. This
    loader reads exponent floats without a dot too, as YAML 1.2 does and as people write learning rates."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                  list("-+0123456789"))


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``train.steps=200`` -> (["train", "steps"], 200); the value is read as YAML."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {_shown(assignment)}: expected KEY.PATH=VALUE, e.g. train.steps=200")
    try:
        parsed = read_yaml(value) if value.strip() else ""
    except _YAML_FAILURES:
        parsed = value  # validation then names the key and shows the text as given
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, assignments: list[str]) -> dict:
    """Set each ``KEY.PATH=VALUE`` in a copy of ``raw`` (whose shape ``_check_shape`` has accepted)."""
    # deepcopy, not a JSON round trip: YAML dates, sets and binary values must reach validation, which names them
    merged = copy.deepcopy(raw) if raw else {}
    for assignment in assignments:
        path, value = parse_override(assignment)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {_shown(assignment)}: {_key(part)} is not a mapping")
            node = child
        node[path[-1]] = value
    return merged


LOCAL_PATH_KEYS = (("data", "prepared_dir"), ("data", "dvc_remote"), ("train", "storage_path"),
                   ("evaluation", "cache_dir"), ("evaluation", "reports_dir"))


def anchor_paths(params: Params, base: Path) -> Params:
    """Relative local paths in ``params`` made absolute against ``base`` (the params file's directory)."""
    anchored = params.model_copy(deep=True)
    for section, key in LOCAL_PATH_KEYS:
        holder = getattr(anchored, section)
        value = getattr(holder, key)
        if "://" not in value and not Path(value).is_absolute():
            try:
                setattr(holder, key, str((base / value).resolve()))
            except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop
                raise ConfigError(f"{section}.{key}: not a usable path ({exc}), got {_shown(value)}") from None
    return anchored


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, merge ``--set`` overrides into, and validate a params file.

    Relative paths in it are taken relative to the file's directory, so a
    flow, a DVC stage and a CLI command started anywhere agree on them.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({type(exc).__name__}); expected a UTF-8 YAML file") from None
    try:
        raw = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except _YAML_FAILURES as exc:
        reason = ("nested too deeply" if isinstance(exc, RecursionError) else "an integer of more than 4300 digits"
                  if "integer string conversion" in str(exc) else " ".join(str(exc).split())[:120])
        raise ConfigError(f"{path}: not valid YAML ({reason})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    source = f"{path.name} (with --set)" if overrides else path.name
    _check_shape(raw, path.name)
    try:
        merged = apply_overrides(raw or {}, overrides or [])
    except ConfigError as exc:  # the --set syntax errors: prefixed like every other error of this file
        raise ConfigError(f"{source}: {exc}") from None
    params = validate_params(merged, source)
    try:
        return anchor_paths(params, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
