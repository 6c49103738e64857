"""``ganzoo tune``: a hyperparameter search of one family on Ray Tune, with ASHA stopping bad trials early.

A trial trains the family as users train it (a Ray Train job of ``train.workers``
workers) under a wall-time budget, in rungs: to 1/R of ``train.max_seconds``,
evaluate, report; resume the same run to 2/R, evaluate, report; ... up to the
whole budget. Every trial is thus judged at the same training cost, so a setting
that is slow per step (a larger batch, more critic steps) competes fairly with a
fast one. ASHA (Ray Tune's asynchronous successive halving) compares trials at
each mark and stops the ones behind.

Layout under ``train.storage_path/tune-<family>-<hash>/``: one Ray Train run per
trial (``trial-<id>/checkpoint_*``) and Ray Tune's own state (``search-<time>/``).
The repository's ``runs/`` and ``reports/`` are not touched. MLflow gets a parent
run per search and a child run per trial (``components/registry/tuning_runs.py``).

The search space, the table and the ``overrides`` block are pure functions; Ray is
imported only by the functions that run the search (start-up time of the CLI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import yaml

from components import pipeline
from components.config import Params, TrainConfig, parse_override, read_yaml, validate_params
from components.errors import ConfigError, GanzooError
from components.registry import tuning_runs
from components.registry.tuning_runs import SearchRun

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
LR_SPREAD = 4.0  # the default learning-rate range: the configured rate / 4 .. * 4, log-uniform
CRITIC_FIELDS = ("n_critic", "d_steps")  # discriminator (critic) updates per generator update
CRITIC_CHOICES = (1, 2, 5)
# Time is a trial's budget: train.steps only bounds it when the user sets it, or every mark after the step
# limit would compare the same checkpoint
UNBOUNDED_STEPS = 1_000_000_000
TUNER_KEYS = ("train.max_seconds", "train.storage_path")  # set by the search at every mark, so never searched
DEFAULT_BUDGET_S = 240.0
MARK = "mark"  # the result key ASHA counts its time in: the number of the budget mark reached
TRIAL_MEMORY_BYTES = 256 * 2**20  # what a trial reserves on its node besides its Train workers (see _tuner)
EVAL_PREFIX = "eval/"  # evaluation metrics in a Tune result, apart from Tune's own keys
MINIMISED_SUFFIXES = ("_l1", "_mse")
MAXIMISED = {"precision", "recall", "density", "coverage", "inception_score", "classes_covered", "class_entropy",
             "psnr", "ssim", "diversity"}
MAXIMISED_SUFFIXES = ("_accuracy", "_miou", "_nmi", "_agreement", "_diversity", "_preservation")


# -- the search space ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dimension:
    """One searched setting: its params.yaml key path, a distribution and that distribution's arguments."""

    key: str  # overrides.<family>.<name> or train.<name>
    kind: str  # one of DISTRIBUTIONS
    values: tuple[Any, ...]  # (low, high), or the choices

    @property
    def name(self) -> str:
        """A family hyperparameter by its own name (as in --space), a train key with its section."""
        return self.key.split(".", 2)[2] if self.key.startswith("overrides.") else self.key

    def spec(self) -> str:
        joiner = "," if self.kind == "choice" else ":"
        return f"{self.kind}:{joiner.join(json.dumps(v) for v in self.values)}"

    def sampler(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        low, high = self.values
        if self.kind == "randint":
            return tune.randint(low, high + 1)  # Tune's upper bound is exclusive; --space's is not
        return getattr(tune, self.kind)(low, high)


def parse_space_entry(entry: str, family: str, params: Params) -> Dimension:
    """``lr=loguniform:1e-4:4e-3`` as a Dimension whose values params.yaml's validation accepts."""
    key, sep, spec = entry.partition("=")
    if not sep or not key.strip() or not spec.strip():
        raise ConfigError(f"--space {entry!r}: expected KEY=SPEC, e.g. lr=loguniform:1e-4:4e-3 or "
                          "n_critic=choice:1,2,5")
    where = f"--space {entry}"
    kind, _, arguments = spec.strip().partition(":")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (expected one of: {', '.join(DISTRIBUTIONS)})")
    dimension = Dimension(resolve_key(key.strip(), family, where), kind, _arguments(kind, arguments, where))
    check_dimension(dimension, family, params, where)
    return dimension


def resolve_key(key: str, family: str, where: str) -> str:
    """``lr`` → ``overrides.<family>.lr``; a train key (``batch_size``, ``train.batch_size``) → ``train.<key>``."""
    from components.families import get_family

    names = {f.name for f in dataclasses.fields(get_family(family).Config)}
    if key.startswith(f"overrides.{family}.") and key.count(".") == 2:
        path = key
    elif key.startswith("train.") and key.count(".") == 1:
        path = key
    elif "." in key:
        raise ConfigError(f"{where}: {key}: expected a hyperparameter of {family} (e.g. lr) or train.KEY")
    elif key in names or key not in TrainConfig.model_fields:  # an unknown name: validation names the family's
        path = f"overrides.{family}.{key}"
    else:
        path = f"train.{key}"
    if path in TUNER_KEYS:
        raise ConfigError(f"{where}: {path} is set by the search at every budget mark (--max-seconds, "
                          "train.storage_path); it cannot be searched")
    return path


def _arguments(kind: str, text: str, where: str) -> tuple[Any, ...]:
    if kind == "choice":
        items = [part.strip() for part in text.split(",")]
        if not text.strip() or not all(items):
            raise ConfigError(f"{where}: expected choice:A,B,... with at least one value, e.g. n_critic=choice:1,2,5")
        return tuple(dict.fromkeys(_scalar(item) for item in items))  # in order, each once
    parts = text.split(":")
    bounds = [_scalar(part.strip()) for part in parts]
    rule, example = {"loguniform": ("0 < LOW < HIGH", "lr=loguniform:1e-4:4e-3"),
                     "uniform": ("LOW < HIGH", "beta1=uniform:0.0:0.9"),
                     "randint": ("integers LOW <= HIGH", "n_critic=randint:1:5")}[kind]
    if len(bounds) != 2 or not _bounds_fit(kind, *bounds):
        raise ConfigError(f"{where}: expected {kind}:LOW:HIGH with {rule}, e.g. {example}")
    return tuple(bounds)


def _bounds_fit(kind: str, low: Any, high: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers:
        return False
    if kind == "randint":
        return isinstance(low, int) and isinstance(high, int) and low <= high
    return (0 < low < high) if kind == "loguniform" else low < high


def _scalar(text: str) -> Any:
    """A value as --set reads it (YAML: 1e-4 a float, 5 an int, true a bool), else the text itself."""
    try:
        value = read_yaml(text)
    except Exception:  # PyYAML raises several types for odd text; the text then stands for itself
        return text
    return text if isinstance(value, (dict, list)) or value is None else value


def check_dimension(dimension: Dimension, family: str, params: Params, where: str) -> None:
    """Every bound or choice must pass params.yaml's validation, and integer keys take integer distributions."""
    for value in dimension.values:
        trial_params(params, {dimension.key: value}, where)
    if dimension.kind in ("loguniform", "uniform") and _takes_integers(dimension.key, family):
        raise ConfigError(f"{where}: {dimension.key} takes integers; use randint:LOW:HIGH or choice:A,B,...")


def _takes_integers(key: str, family: str) -> bool:
    from components.families import get_family

    section, _, name = key.partition(".")
    if section == "train":
        return TrainConfig.model_fields[name].annotation is int
    return typing.get_type_hints(get_family(family).Config).get(name.split(".", 1)[1]) is int


def default_space(family: str, params: Params, fixed: set[str]) -> list[Dimension]:
    """The usual suspects around the configured values: each learning rate log-uniform from rate / 4 to rate * 4,
    the critic updates per generator update among 1, 2, 5, and the per-worker batch at half, same or double.
    Keys in ``fixed`` (set with --set) stay as set."""
    config = params.family_config(family)
    found = []
    for spec in dataclasses.fields(config):
        value, key = getattr(config, spec.name), f"overrides.{family}.{spec.name}"
        if _is_learning_rate(spec.name) and isinstance(value, float) and value > 0:
            found.append(Dimension(key, "loguniform", (_rounded(value / LR_SPREAD), _rounded(value * LR_SPREAD))))
        elif spec.name in CRITIC_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            found.append(Dimension(key, "choice", tuple(sorted({*CRITIC_CHOICES, value}))))
    batch = params.train.batch_size
    found.append(Dimension("train.batch_size", "choice", tuple(sorted({max(1, batch // 2), batch, batch * 2}))))
    return [dimension for dimension in found if dimension.key not in fixed]


def _is_learning_rate(name: str) -> bool:
    return name == "lr" or name.startswith("lr_") or name.endswith("_lr")


def build_space(entries: list[str], family: str, params: Params, fixed: set[str],
                defaults: bool = True) -> dict[str, Dimension]:
    """The default space (unless ``defaults`` is off) with each --space entry added or replacing a default."""
    space = {d.key: d for d in default_space(family, params, fixed)} if defaults else {}
    given: set[str] = set()
    for entry in entries:
        dimension = parse_space_entry(entry, family, params)
        if dimension.key in given:
            raise ConfigError(f"--space {entry}: {dimension.name} is given twice")
        given.add(dimension.key)
        space[dimension.key] = dimension
    if not space:
        raise ConfigError("--space: nothing to search; give --space KEY=SPEC, e.g. lr=loguniform:1e-4:4e-3")
    return space


def set_keys(assignments: list[str]) -> set[str]:
    """The leaf key paths that --set assignments name: ``overrides={dcgan: {lr: 1}}`` → ``overrides.dcgan.lr``."""
    keys: set[str] = set()
    for assignment in assignments:
        path, value = parse_override(assignment)
        keys |= _leaves(".".join(path), value)
    return keys


def _leaves(prefix: str, value: Any) -> set[str]:
    if isinstance(value, dict) and value:
        return set().union(*(_leaves(f"{prefix}.{key}", child) for key, child in value.items()))
    return {prefix}


def search_assignments(sets: list[str], max_seconds: float | None) -> list[str]:
    """The --set list a search loads params.yaml with: the budget, and no step limit unless the user set one."""
    extra = [f"train.max_seconds={max_seconds}"] if max_seconds is not None else []
    if "train.steps" not in set_keys(sets):
        extra.append(f"train.steps={UNBOUNDED_STEPS}")
    return list(sets) + extra


def trial_params(base: Params, values: dict[str, Any], source: str = "tune trial") -> Params:
    """``base`` with each ``key.path: value`` set, validated as params.yaml is."""
    raw = base.model_dump()
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})  # overrides.<family> may not exist yet
        node[leaf] = _plain(value)
    return validate_params(raw, source)


def _plain(value: Any) -> Any:
    # Tune samples numpy scalars; validation (and YAML) want Python numbers
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)) else value


# -- the plan -------------------------------------------------------------------------------------

def metric_mode(metric: str, mode: str | None = None) -> str:
    """``min`` or ``max``: as given, or known from the evaluator's metric names."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise ConfigError(f"--mode {mode!r}: expected min or max")
        return mode
    if metric.startswith(("fid", "kid")) or metric == "l1" or metric.endswith(MINIMISED_SUFFIXES):
        return "min"
    if metric in MAXIMISED or metric.endswith(MAXIMISED_SUFFIXES):
        return "max"
    raise ConfigError(f"--metric {metric}: cannot tell whether lower or higher is better; add --mode min or "
                      "--mode max")


def budget_marks(budget_s: float, rungs: int) -> tuple[float, ...]:
    """The training seconds at which a trial is evaluated: 1/R, 2/R, ... of the budget."""
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise ConfigError(f"--max-seconds: expected a positive number of seconds, got {budget_s!r}")
    if rungs < 1:
        raise ConfigError(f"--rungs: expected a positive integer, got {rungs}")
    return tuple(budget_s * k / rungs for k in range(1, rungs + 1))


@dataclass(frozen=True)
class SearchPlan:
    family: str
    space: dict[str, Dimension]
    metric: str
    mode: str  # min | max
    marks: tuple[float, ...]  # training seconds at each evaluation; the last is the whole budget
    trials: int
    directory: str  # the trials' Ray Train runs and Ray Tune's state
    concurrency: int | None = None  # trials at once; None: as many training jobs as the cluster holds
    reduction_factor: int = 2  # ASHA keeps the best 1 / reduction_factor at each decision
    seed: int = 0


def make_plan(params: Params, family: str, space: dict[str, Dimension], *, trials: int, rungs: int,
              metric: str = "fid", mode: str | None = None, concurrency: int | None = None,
              reduction_factor: int = 2) -> SearchPlan:
    """Check the search settings and name the search's directory after everything that defines the search."""
    if trials < 1:
        raise ConfigError(f"--trials: expected a positive integer, got {trials}")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency: expected a positive integer, got {concurrency}")
    if reduction_factor < 2:
        raise ConfigError(f"--reduction-factor: expected an integer of at least 2, got {reduction_factor}")
    marks = budget_marks(params.train.max_seconds or DEFAULT_BUDGET_S, rungs)
    mode = metric_mode(metric, mode)
    blob = json.dumps({"params": params.params_hash(family), "space": {k: d.spec() for k, d in space.items()},
                       "marks": marks, "trials": trials, "metric": metric, "mode": mode,
                       "reduction_factor": reduction_factor}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    directory = f"{params.train.storage_path.rstrip('/')}/tune-{family}-{digest}"
    return SearchPlan(family, space, metric, mode, marks, trials, directory, concurrency, reduction_factor,
                      params.train.seed)


def trial_run_name(trial_id: str) -> str:
    return f"trial-{trial_id}"


# -- one trial (inside a Ray Tune actor) -----------------------------------------------------------

class TrialStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped early"
    DIVERGED = "diverged"
    FAILED = "failed"


class TrialFailed(GanzooError):
    """A trial that cannot go on: its training diverged or failed, or its evaluation lacks the metric."""

    def __init__(self, status: TrialStatus, reason: str) -> None:
        super().__init__(status, reason)  # both in args: the error is pickled back to the driver whole
        self.status, self.reason = TrialStatus(status), reason

    def __str__(self) -> str:
        return f"{self.status.value}: {self.reason}"


def run_trial(config: dict[str, Any], plan: SearchPlan, base: Params, prepared: Any, data_version: str) -> None:
    """Train to each budget mark, resuming the trial's own run, evaluate there and report to Tune."""
    from ray import tune

    from components.training.launcher import train_family

    run_name = trial_run_name(tune.get_context().get_trial_id())
    for number, mark in enumerate(plan.marks, start=1):
        params = trial_params(base, {**config, "train.storage_path": plan.directory, "train.max_seconds": mark})
        outcome = train_family(params, plan.family, prepared, run_name=run_name, show_progress=False)
        if not outcome.ok:
            status = TrialStatus.DIVERGED if outcome.status == "diverged" else TrialStatus.FAILED
            raise TrialFailed(status, outcome.reason or outcome.status)
        scores = _evaluate(params, outcome, prepared, data_version)
        tune.report(mark_result(number, float(outcome.metrics.get("elapsed_s", mark)), outcome.step, scores,
                                plan.metric))


def _evaluate(params: Params, outcome: Any, prepared: Any, data_version: str) -> dict[str, float]:
    import torch

    from components.evaluation.evaluate import evaluate_checkpoint

    checkpoint = outcome.checkpoint
    if params.train.storage_path.startswith("s3://"):  # as train_stage: pyarrow's paths lack the scheme
        checkpoint = f"s3://{checkpoint.removeprefix('s3://')}"
    # the trial's training workers are idle while it evaluates: their cores are the trial's to use
    torch.set_num_threads(params.train.workers * params.train.cpus_per_worker)
    local = pipeline.fetch_checkpoint(params, checkpoint)
    return evaluate_checkpoint(local, prepared, data_version, params.evaluation).metrics


def mark_result(number: int, seconds: float, step: int, scores: dict[str, float], metric: str) -> dict[str, Any]:
    """What a trial reports to Tune at a mark; a metric the evaluation lacks (or that is not finite) ends it."""
    finite = {name: float(value) for name, value in scores.items()
              if isinstance(value, (int, float)) and math.isfinite(value)}
    if metric not in finite:
        raise TrialFailed(TrialStatus.FAILED, f"the evaluation gave no finite {metric!r} (it gave: "
                                              f"{', '.join(sorted(finite))})")
    return {MARK: number, "train_seconds": seconds, "train_step": step,
            **{f"{EVAL_PREFIX}{name}": value for name, value in finite.items()}}


# -- what the driver learns of the trials ---------------------------------------------------------

@dataclass
class TrialRecord:
    number: int  # in order of start, from 1
    trial_id: str
    config: dict[str, Any]  # searched key path -> value
    values: list[float] = field(default_factory=list)  # the metric at each mark reached
    status: TrialStatus = TrialStatus.RUNNING
    reason: str = ""
    run_id: str | None = None  # its MLflow child run


class SearchLog:
    """Tune's callbacks turned into trial records, progress lines and (given ``search``) MLflow child runs."""

    def __init__(self, plan: SearchPlan, search: SearchRun | None = None,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.plan, self.search, self.say = plan, search, say
        self.records: dict[str, TrialRecord] = {}

    def record(self, trial_id: str, config: dict[str, Any]) -> TrialRecord:
        if trial_id not in self.records:
            values = {key: _plain(value) for key, value in config.items() if key in self.plan.space}
            record = TrialRecord(len(self.records) + 1, trial_id, values)
            self.records[trial_id] = record
            if self.search is not None:
                tags = {"family": self.plan.family, "ganzoo.tune.trial_id": trial_id,
                        "ganzoo.tune.training_run": f"{self.plan.directory}/{trial_run_name(trial_id)}"}
                names = {self.plan.space[key].name: value for key, value in values.items()}
                name = f"{self.plan.family}-trial-{record.number}"
                record.run_id = tuning_runs.start_trial_run(self.search, name, names, tags)
            self.say(f"trial {record.number} started: {describe_config(record.config, self.plan)}")
        return self.records[trial_id]

    def reported(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        record = self.record(trial_id, config)
        value = float(result[f"{EVAL_PREFIX}{self.plan.metric}"])
        record.values.append(value)
        if self.search is not None:
            metrics = {key.removeprefix(EVAL_PREFIX): v for key, v in result.items() if key.startswith(EVAL_PREFIX)}
            metrics.update(train_seconds=result["train_seconds"], train_step=result["train_step"])
            tuning_runs.log_mark(self.search, record.run_id, metrics, int(result[MARK]))
        self.say(f"trial {record.number} mark {result[MARK]}/{len(self.plan.marks)}: {self.plan.metric} "
                 f"{value:.4g} after {result['train_seconds']:.1f} s of training ({result['train_step']} steps)")

    def completed(self, trial_id: str, config: dict[str, Any]) -> None:
        """Tune ended the trial: after its last mark (completed) or, before it, by ASHA's decision."""
        record = self.record(trial_id, config)
        if record.status is not TrialStatus.RUNNING:  # ended already: Tune may say so once per way it noticed
            return
        done = len(record.values) >= len(self.plan.marks)
        record.status = TrialStatus.COMPLETED if done else TrialStatus.STOPPED
        self._end(record, "FINISHED" if done else "KILLED")

    def failed(self, trial_id: str, config: dict[str, Any], error: BaseException | None) -> None:
        record = self.record(trial_id, config)
        if record.status is not TrialStatus.RUNNING:
            return
        record.status, record.reason = failure_of(error)
        self._end(record, "FAILED")

    def _end(self, record: TrialRecord, mlflow_status: str) -> None:
        if self.search is not None:
            tuning_runs.end_trial_run(self.search, record.run_id, mlflow_status, record.status.value, record.reason)
        self.say(f"trial {record.number}: {status_text(record, self.plan)}")

    def sorted_records(self) -> list[TrialRecord]:
        return sorted(self.records.values(), key=lambda r: r.number)


def failure_of(error: BaseException | None) -> tuple[TrialStatus, str]:
    """(status, one-line reason) of a trial's error; Ray hands it back wrapped in a RayTaskError."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, TrialFailed):
        return cause.status, cause.reason
    if cause is None:
        return TrialStatus.FAILED, "the trial failed without an error message"
    lines = str(cause).strip().splitlines()
    return TrialStatus.FAILED, f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# -- the report -----------------------------------------------------------------------------------

def best_trial(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The completed trial with the best metric at the whole budget (stopped trials trained less)."""
    completed = [r for r in records if r.status is TrialStatus.COMPLETED and r.values]
    if not completed:
        return None
    pick = min if mode == "min" else max
    return pick(completed, key=lambda r: r.values[-1])


def overrides_block(plan: SearchPlan, base_overrides: dict[str, Any], best: TrialRecord, trials: int) -> str:
    """The best configuration as params.yaml YAML: the family's whole ``overrides`` entry (the configured ones
    with the searched ones replaced), and a ``train`` block for searched train keys."""
    family_values = dict(base_overrides)
    train_values = {}
    for key, value in best.config.items():
        name = plan.space[key].name
        if key.startswith("train."):
            train_values[name.removeprefix("train.")] = _rounded(value)
        else:
            family_values[name] = _rounded(value)
    document: dict[str, Any] = {"overrides": {plan.family: family_values}}
    if train_values:
        document["train"] = train_values
    header = (f"# best of {trials} trials: trial {best.number}, {plan.metric} {best.values[-1]:.4g} after "
              f"{plan.marks[-1]:g} s of training per trial (train.max_seconds)\n")
    return header + yaml.safe_dump(_yaml_ready(document), sort_keys=False, default_flow_style=False)


def _rounded(value: Any) -> Any:
    # three significant digits: what a person pastes; the trial's exact value is in its MLflow run
    return float(f"{value:.3g}") if isinstance(value, float) else value


def _yaml_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _yaml_ready(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_ready(child) for child in value]
    return value


TABLE_COLUMNS = ("trial", "config", "marks", "{metric}", "status")


def table_rows(records: list[TrialRecord], plan: SearchPlan) -> list[list[str]]:
    """One row per trial: number, config, marks reached of all, the metric at the last mark reached, status."""
    return [[str(r.number), describe_config(r.config, plan), f"{len(r.values)}/{len(plan.marks)}",
             f"{r.values[-1]:.4g}" if r.values else "", status_text(r, plan)] for r in records]


def status_text(record: TrialRecord, plan: SearchPlan) -> str:
    if record.status is TrialStatus.STOPPED:
        return f"stopped early by ASHA at mark {len(record.values)}/{len(plan.marks)}"
    return f"{record.status.value}: {record.reason}" if record.reason else record.status.value


def describe_config(config: dict[str, Any], plan: SearchPlan) -> str:
    return " ".join(f"{plan.space[key].name}={_short(value)}" for key, value in config.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header: plain text that copies and greps well."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


@dataclass
class SearchOutcome:
    plan: SearchPlan
    records: list[TrialRecord]
    best: TrialRecord | None
    overrides_yaml: str | None
    experiment: str  # the MLflow experiment of the search
    parent_run_id: str


def render_report(outcome: SearchOutcome) -> str:
    """The table of trials, then the best configuration as a block to paste into params.yaml."""
    plan = outcome.plan
    header = [column.format(metric=plan.metric) for column in TABLE_COLUMNS]
    table = format_table(header, table_rows(outcome.records, plan))
    if outcome.overrides_yaml is None:
        return f"{table}\n\nno trial completed its budget: no configuration to recommend"
    return f"{table}\n\nbest configuration (paste into params.yaml):\n{outcome.overrides_yaml}"


# -- the search (driver) --------------------------------------------------------------------------

def run_search(params: Params, plan: SearchPlan, prepared: Any, data_version: str,
               say: Callable[[str], None] = lambda line: None) -> SearchOutcome:
    """Run the plan's trials on Ray Tune and log them to MLflow; returns the records and the best configuration."""
    from components.evaluation.extractors import build_extractor

    slots = pipeline.start_cluster(params)  # connects to Ray; how many training jobs fit at once
    concurrency = plan.concurrency or slots
    build_extractor(params.evaluation, prepared, data_version)  # trained once here, not by trials at once
    search = tuning_runs.start_search_run(params, plan.family, _settings(plan, concurrency),
                              {"data_version": data_version, "ganzoo.tune.directory": plan.directory})
    log = SearchLog(plan, search, say)
    status = "FAILED"
    try:
        _tuner(params, plan, prepared, data_version, concurrency, log).fit()
        status = "FINISHED"
    finally:
        records = log.sorted_records()
        best = best_trial(records, plan.mode)
        block = overrides_block(plan, params.overrides.get(plan.family, {}), best, len(records)) if best else None
        outcome = SearchOutcome(plan, records, best, block, search.registry.experiment, search.run_id)
        tuning_runs.end_search_run(search, status, _summary(records, best, plan),
                       {"tune/trials.txt": render_report(outcome), **({"tune/best.yaml": block} if block else {})})
    return outcome


def _tuner(params: Params, plan: SearchPlan, prepared: Any, data_version: str, concurrency: int,
           log: SearchLog) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from components.training.launcher import storage_for

    trainable = tune.with_parameters(run_trial, plan=plan, base=params, prepared=prepared, data_version=data_version)
    # a trial only drives its Ray Train job, whose workers hold the CPUs: reserving one for the trial itself
    # would leave a 2-core machine without room for the 2 workers users train with. Tune refuses a trial that
    # reserves nothing, so it reserves memory, which it does use (the prepared data, the evaluation's samples)
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": TRIAL_MEMORY_BYTES})
    scheduler = ASHAScheduler(time_attr=MARK, max_t=len(plan.marks), grace_period=1,
                              reduction_factor=plan.reduction_factor)
    storage, filesystem = storage_for(plan.directory, params.train.storage_endpoint_url)
    return tune.Tuner(
        trainable,
        param_space={key: dimension.sampler() for key, dimension in plan.space.items()},
        tune_config=tune.TuneConfig(metric=f"{EVAL_PREFIX}{plan.metric}", mode=plan.mode, scheduler=scheduler,
                                    # the generator limits concurrency itself: Tune ignores max_concurrent_trials
                                    # for it, and would start every trial at once
                                    search_alg=BasicVariantGenerator(max_concurrent=concurrency,
                                                                     random_state=plan.seed),
                                    num_samples=plan.trials, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=time.strftime("search-%Y%m%d-%H%M%S"), storage_path=storage,
                                  storage_filesystem=filesystem, verbose=0, callbacks=[_forwarding_callback(log)]),
    )


def _trial_dirname(trial: Any) -> str:
    return trial_run_name(trial.trial_id)


def _forwarding_callback(log: SearchLog) -> Any:
    """A Ray Tune callback that hands each trial event to ``log`` (defined here: Ray is imported only to search)."""
    from ray import tune

    class ForwardToLog(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.record(trial.trial_id, trial.config)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            log.reported(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.completed(trial.trial_id, trial.config)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.failed(trial.trial_id, trial.config, trial.get_pickled_error())

    return ForwardToLog()


def _settings(plan: SearchPlan, concurrency: int) -> dict[str, str]:
    settings = {"tune.family": plan.family, "tune.metric": plan.metric, "tune.mode": plan.mode,
                "tune.max_seconds": f"{plan.marks[-1]:g}", "tune.marks": str(len(plan.marks)),
                "tune.trials": str(plan.trials), "tune.concurrency": str(concurrency),
                "tune.reduction_factor": str(plan.reduction_factor), "tune.directory": plan.directory}
    settings.update({f"tune.space.{dimension.name}": dimension.spec() for dimension in plan.space.values()})
    return settings


def _summary(records: list[TrialRecord], best: TrialRecord | None, plan: SearchPlan) -> dict[str, float]:
    counts = {status: sum(r.status is status for r in records) for status in TrialStatus}
    summary = {"trials_completed": counts[TrialStatus.COMPLETED], "trials_stopped": counts[TrialStatus.STOPPED],
               "trials_failed": counts[TrialStatus.FAILED] + counts[TrialStatus.DIVERGED]}
    if best is not None:
        summary[f"best_{plan.metric}"] = best.values[-1]
    return summary
