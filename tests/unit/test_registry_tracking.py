"""Tracking URI resolution, credential redaction and retries on transient store errors (mocked failures)."""

import sqlite3

import pytest

from components.config import DataConfig, EvaluationConfig, Params, RegistryConfig, TrainConfig, validate_params
from components.errors import GanzooError
from components.registry import tracking
from components.registry.runs import flat_params, idempotency_key


def test_tracking_uri_prefers_params_then_environment_then_a_local_sqlite_file(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.tracking_uri(RegistryConfig(tracking_uri="sqlite:////tmp/x.db")) == "sqlite:////tmp/x.db"
    assert tracking.tracking_uri(RegistryConfig()) == "http://mlflow.internal:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(RegistryConfig()) == "sqlite:///mlflow.db"


@pytest.mark.parametrize("uri, shown", [
    ("https://bob:s3cret@mlflow.example.com:443/path", "https://mlflow.example.com:443/path"),
    ("postgresql://user:pw@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ("http://host/?token=abc&x=1", "http://host/?x=1"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("databricks", "databricks"),
])
def test_redact_removes_user_info_and_credential_query_parameters(uri, shown):
    assert tracking.redact(uri) == shown


def test_transient_errors_are_recognised_through_the_exception_chain():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    locked = sqlite3.OperationalError("database is locked")
    try:
        try:
            raise locked
        except sqlite3.OperationalError as exc:
            raise MlflowException("store failed") from exc
    except MlflowException as wrapped:
        assert tracking.is_transient(wrapped)
    assert tracking.is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert tracking.is_transient(ConnectionRefusedError("refused"))
    assert not tracking.is_transient(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not tracking.is_transient(ValueError("bad value"))


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    monkeypatch.setattr("mlflow.get_tracking_uri", lambda: "postgresql://bob:s3cret@db.example.com/mlflow")


def test_a_transient_failure_is_retried_until_it_succeeds(no_backoff):
    calls = []

    @tracking.with_store_retries
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert flaky() == "done" and len(calls) == 3


def test_after_the_last_attempt_one_line_names_the_store_without_credentials(no_backoff):
    calls = []

    @tracking.with_store_retries
    def down() -> None:
        calls.append(1)
        raise ConnectionError("Connection refused by postgresql://bob:s3cret@db.example.com/mlflow\nmore lines")

    with pytest.raises(GanzooError) as error:
        down()
    message = str(error.value)
    assert len(calls) == tracking.ATTEMPTS and "\n" not in message and "s3cret" not in message
    assert message == ("MLflow store postgresql://db.example.com/mlflow: down failed after 4 attempts "
                       "(ConnectionError: Connection refused by postgresql://db.example.com/mlflow)")


def test_a_tracking_server_is_not_retried_on_top_of_mlflows_own_http_retries(no_backoff, monkeypatch):
    monkeypatch.setattr("mlflow.get_tracking_uri", lambda: "https://bob:s3cret@mlflow.example.com")
    calls = []

    @tracking.with_store_retries
    def down() -> None:
        calls.append(1)
        raise ConnectionError("Max retries exceeded")

    with pytest.raises(GanzooError, match="^MLflow store https://mlflow.example.com: down failed"):
        down()
    assert len(calls) == 1


def test_nested_retrying_operations_do_not_multiply_attempts(no_backoff):
    calls = []

    @tracking.with_store_retries
    def inner() -> None:
        calls.append(1)
        raise ConnectionError("reset")

    @tracking.with_store_retries
    def outer() -> None:
        inner()

    with pytest.raises(GanzooError):
        outer()
    assert len(calls) == tracking.ATTEMPTS


def test_a_permanent_error_is_not_retried(no_backoff):
    calls = []

    @tracking.with_store_retries
    def broken() -> None:
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        broken()
    assert len(calls) == 1


def test_flat_params_cover_the_config_and_never_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-from-the-env")
    params = validate_params({"data": {"s3_endpoint_url": "http://alice:hunter2@127.0.0.1:9000",
                                       "dvc_remote_endpoint_url": "a-secret-from-the-env"},
                              "overrides": {"dcgan": {"lr": 0.001}}})
    flat = flat_params(params, "dcgan")
    assert flat["train.steps"] == "600" and flat["overrides.dcgan.lr"] == "0.001" and flat["family.lr"] == "0.001"
    assert flat["data.s3_endpoint_url"] == "http://127.0.0.1:9000" and flat["families"] == '["dcgan"]'
    assert "data.dvc_remote_endpoint_url" not in flat
    assert "hunter2" not in str(flat) and "a-secret-from-the-env" not in str(flat)


def test_flat_params_drop_no_ordinary_setting():
    flat = flat_params(Params(), "dcgan")
    settings = sum(len(section.model_fields) for section in (DataConfig, TrainConfig, EvaluationConfig,
                                                               RegistryConfig))
    assert len([key for key in flat if not key.startswith("family.")]) == settings + 2  # + families, overrides


def test_the_idempotency_key_changes_with_each_of_its_parts():
    base = idempotency_key("md5", "hash", "dcgan", 0)
    assert base == idempotency_key("md5", "hash", "dcgan", 0)
    assert len({base, idempotency_key("md6", "hash", "dcgan", 0), idempotency_key("md5", "hasi", "dcgan", 0),
                idempotency_key("md5", "hash", "cgan", 0), idempotency_key("md5", "hash", "dcgan", 1)}) == 5
