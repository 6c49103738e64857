"""Where the MLflow store is, and how to talk to it without falling over a busy SQLite file.

Only ``components/registry`` talks to MLflow. Every store call that can meet a
transient failure (SQLite "database is locked", a tracking server that is
restarting) goes through ``with_store_retries``; what still fails becomes one
line naming the tracking URI, with any user:password taken out of it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from components.config import RegistryConfig
from components.errors import GanzooError, StoreUnavailableError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ATTEMPTS = 4
FIRST_DELAY_S = 1.0
LOCK_TIMEOUT_S = 300.0

T = TypeVar("T")

_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
_TRANSIENT_TEXT = ("database is locked", "database table is locked", "connection refused", "connection reset",
                   "connection aborted", "temporarily unavailable", "timed out", "max retries exceeded",
                   "could not connect", "server closed the connection", "503 service unavailable")
_SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "auth")

_configured: dict[tuple[str, str], str] = {}
_retrying = threading.local()
_configure_lock = threading.Lock()


def tracking_uri(cfg: RegistryConfig) -> str:
    """params.yaml's ``registry.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite file in the cwd."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def looks_secret(name: str) -> bool:
    """Whether a parameter or query name could hold a credential (``aws_secret_access_key``, ``token``)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(uri: str) -> str:
    """``uri`` without user:password and without credential-like query parameters: safe to print or log."""
    parts = urlsplit(uri)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return uri
    netloc = parts.netloc.rsplit("@", 1)[-1]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = parts.query
    if any(looks_secret(name) for name, _ in pairs):
        query = "&".join(f"{name}={value}" for name, value in pairs if not looks_secret(name))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_transient(error: BaseException) -> bool:
    """A store failure worth retrying: a locked SQLite file, a refused or reset connection, HTTP 503/429."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        if getattr(error, "error_code", None) in _TRANSIENT_CODES:
            return True
        if type(error).__name__ in ("OperationalError", "ConnectTimeout", "ReadTimeout"):
            return True
        if any(text in str(error).lower() for text in _TRANSIENT_TEXT):
            return True
        error = error.__cause__ or error.__context__
    return False


def with_store_retries(action: Callable[..., T]) -> Callable[..., T]:
    """Decorator: retry ``action`` with exponential backoff on transient store errors.

    Only the outermost decorated call retries (a decorated operation calling
    another would otherwise multiply the attempts); it retries the whole
    operation, whose steps are idempotent. After the last attempt the caller
    gets one line.
    """

    @functools.wraps(action)
    def run(*args, **kwargs) -> T:
        if getattr(_retrying, "active", False):
            return action(*args, **kwargs)
        _retrying.active = True
        try:
            return _retry(action, args, kwargs)
        finally:
            _retrying.active = False

    return run


def _retry(action: Callable[..., T], args: tuple, kwargs: dict) -> T:
    delay, attempt = FIRST_DELAY_S, 1
    while True:
        try:
            return action(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempts = _attempts(_current_uri())  # read now: the action itself may have configured the store
            if attempt >= attempts:
                raise StoreUnavailableError(_store_failure(action.__name__, exc, attempts)) from exc
        time.sleep(delay)
        delay, attempt = delay * 2, attempt + 1


def _attempts(uri: str) -> int:
    # MLflow's HTTP client already retries with backoff for minutes; repeating that would stall for a quarter hour
    return 1 if uri.startswith(("http://", "https://")) else ATTEMPTS


def _current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _store_failure(operation: str, error: BaseException, attempts: int) -> str:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    tries = f"after {attempts} attempts" if attempts > 1 else "(MLflow's HTTP client already retried)"
    return (f"MLflow store {redact(_current_uri())}: {operation} failed {tries} "
            f"({type(error).__name__}: {redact_text(first_line)})")


def redact_text(text: str) -> str:
    """Take user:password out of any URL inside ``text``."""
    return " ".join(redact(word) if "://" in word else word for word in text.split(" "))


def configure(cfg: RegistryConfig) -> str:
    """Point MLflow at the store and experiment of ``cfg`` (creating it once); returns the experiment id.

    Idempotent and cheap after the first call per (URI, experiment). A new
    experiment of a SQLite store keeps its artifacts beside the database file,
    not in whatever directory the process happened to start in.
    """
    uri = tracking_uri(cfg)
    if cfg.artifacts_endpoint_url:  # MLflow's S3 artifact client reads its endpoint from this variable only
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = cfg.artifacts_endpoint_url
    with _configure_lock:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        key = (canonical_uri(uri), cfg.experiment)
        if key not in _configured:
            _configured[key] = _ensure_experiment(uri, cfg.experiment, cfg.artifact_location)
        mlflow.set_experiment(experiment_id=_configured[key])
        return _configured[key]


@with_store_retries
def _ensure_experiment(uri: str, name: str, artifact_root: str | None = None) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise GanzooError(f"MLflow store {redact(uri)}: experiment {name!r} is deleted; restore it or set "
                              f"registry.experiment to another name")
        return experiment.experiment_id
    try:
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else _artifact_location(uri, name)
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id  # another process created it first


def _artifact_location(uri: str, experiment: str) -> str | None:
    database = _sqlite_path(uri)
    if database is None:
        return None  # a tracking server or database server chooses its own artifact root
    return (database.parent / "mlartifacts" / experiment).as_uri()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return Path(path).resolve() if path and path != ":memory:" else None


def canonical_uri(uri: str) -> str:
    """The same store spelled one way: a relative SQLite path made absolute."""
    database = _sqlite_path(uri)
    return f"sqlite:///{database}" if database else uri


def client_for(cfg: RegistryConfig):
    """An MlflowClient of the configured store (``configure`` first, so fluent calls agree with it)."""
    from mlflow import MlflowClient

    configure(cfg)
    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def model_lock(cfg: RegistryConfig, model_name: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise registry writes to one model across processes on this machine.

    MLflow has no compare-and-set on aliases, so two processes promoting at once
    could each see the old champion. The lock file is keyed by the store and the
    model name and lives in ``$GANZOO_LOCK_DIR`` (default: the system temp dir).
    """
    from filelock import FileLock, Timeout

    digest = hashlib.sha256(f"{canonical_uri(tracking_uri(cfg))}\n{model_name}".encode()).hexdigest()[:24]
    lock_dir = Path(os.environ.get("GANZOO_LOCK_DIR") or Path(tempfile.gettempdir()) / "ganzoo-locks")
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{digest}.lock"
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout:
        raise GanzooError(f"{model_name}: the registry lock {path} is still held after {timeout_s:.0f} s by "
                          f"another ganzoo process") from None
