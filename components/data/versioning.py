"""Version the prepared dataset with DVC: commit it to the cache, push it to a remote.

The prepared directory is the output of the `prepare` stage in dvc.yaml, so it is
versioned by committing that stage (dvc.lock records its md5), not by `dvc add`,
which would clash with the stage's output. A project whose dvc.yaml does not produce
the directory falls back to `dvc add` (a .dvc file). The data version is DVC's md5
of the directory, e.g. ``3f2a…c9.dir``.

The remote is machine-specific (a local directory or an S3 endpoint), so it lives in
.dvc/config.local; credentials come only from the AWS environment and are never
written into DVC config, logs or return values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.errors import ConfigError, DataError, GanzooError

REMOTE_NAME = "ganzoo"
# Loggers that print a line per file or per credential lookup at INFO; the flow prints its own summary.
_NOISY_LOGGERS = ("dvc", "dvc_data", "dvc_objects", "aiobotocore.credentials", "botocore.credentials")
_CWD_LOCK = threading.Lock()
# The S3 probe fails fast; retrying a whole versioning attempt is the flow's job.
_S3_PROBE_CONFIG = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}}


@dataclasses.dataclass(frozen=True)
class DataVersion:
    md5: str  # DVC's md5 of the prepared directory, ending in ".dir"
    path: str  # the prepared directory, relative to the project root
    remote: str  # where it was pushed, without credentials
    pushed: int  # objects pushed by this call (files plus the directory listing); 0 when the remote had them

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_project_root(start: str | Path) -> Path:
    """The nearest enclosing directory with a .dvc folder that is also inside a git work tree."""
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        if (directory / ".dvc").is_dir():
            if _inside_git(directory):
                return directory
            break
    raise _not_a_repo(start)


def init_project(path: str | Path) -> list[str]:
    """`git init` and `dvc init` in ``path`` where missing; returns the commands it ran."""
    from dvc.repo import Repo

    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    done = []
    if not _inside_git(path):
        _git(path, "init", "-q")
        done.append("git init")
    if not (path / ".dvc").is_dir():
        subdir = _git_toplevel(path) != path  # DVC needs --subdir below a git root (a monorepo)
        with _quiet_dvc(), _dvc_errors(f"dvc init in {path}", path):
            Repo.init(str(path), subdir=subdir).close()
        done.append("dvc init --subdir" if subdir else "dvc init")
    return done


def configure_remote(repo_root: str | Path, remote_url: str, endpoint_url: str | None = None) -> str:
    """Make ``remote_url`` the default DVC remote "ganzoo" in .dvc/config.local; returns it without credentials."""
    with _dvc_repo(Path(repo_root).resolve(), f"configuring DVC remote {_redact(remote_url)}") as repo:
        return _configure(repo, remote_url, endpoint_url)


def version_prepared(
    repo_root: str | Path, prepared_dir: str | Path, remote_url: str, endpoint_url: str | None = None
) -> DataVersion:
    """Commit the prepared directory to DVC (stage commit, else `dvc add`) and push it to the remote."""
    root = Path(repo_root).resolve()
    rel = _relative(root, prepared_dir)
    if not (root / rel).is_dir():
        raise DataError(f"{root / rel}: no prepared dataset there; run `ganzoo prepare` first")
    with _dvc_repo(root, f"versioning {rel} with DVC") as repo:
        remote = _configure(repo, remote_url, endpoint_url)
        target, md5 = _commit(repo, root / rel)
        pushed = _push(repo, target, remote, remote_url, endpoint_url)
    return DataVersion(md5=md5, path=rel, remote=remote, pushed=pushed)


def current_data_version(repo_root: str | Path, prepared_dir: str | Path) -> str | None:
    """The md5 that dvc.lock (or the .dvc file) records for the prepared directory; None if none is recorded."""
    from dvc.exceptions import OutputNotFoundError

    root = Path(repo_root).resolve()
    rel = _relative(root, prepared_dir)
    with _dvc_repo(root, f"reading the DVC version of {rel}") as repo:
        try:
            (out,) = repo.find_outs_by_path(str(root / rel))
        except OutputNotFoundError:
            return None
        return out.hash_info.value or None


# --- the remote --------------------------------------------------------------------------


def _configure(repo: Any, remote_url: str, endpoint_url: str | None) -> str:
    """Write the remote only when it differs, so that an unchanged config file is left untouched."""
    _refuse_credentials(remote_url, "data.dvc_remote")
    _refuse_credentials(endpoint_url, "data.dvc_remote_endpoint_url")
    if remote_url.startswith("s3://"):
        url = _s3_remote(remote_url)
    else:
        url, endpoint_url = _local_remote(repo, remote_url), None  # an endpoint means nothing to a folder
    local = repo.config.read("local")
    current = local.get("remote", {}).get(REMOTE_NAME, {})
    if (
        str(current.get("url")) == str(url)
        and current.get("endpointurl") == endpoint_url
        and local.get("core", {}).get("remote") == REMOTE_NAME
    ):
        return str(url)
    with repo.config.edit("local") as conf:
        section = conf["remote"].setdefault(REMOTE_NAME, {})  # keeps options a user added (region, profile…)
        section["url"] = url
        section.pop("endpointurl", None)
        if endpoint_url:
            section["endpointurl"] = endpoint_url
        conf["core"]["remote"] = REMOTE_NAME
    return str(url)


def _refuse_credentials(url: str | None, key: str) -> None:
    if url and _redact(url) != url:  # the message must not repeat them
        raise ConfigError(f"{key}: the URL holds credentials (user:password@); put them in the AWS environment or profile")


def _s3_remote(remote_url: str) -> str:
    if not remote_url[5:].split("/", 1)[0]:
        raise ConfigError(f"data.dvc_remote {remote_url!r}: expected s3://bucket/prefix")
    return remote_url


def _local_remote(repo: Any, remote_url: str) -> Any:
    """Create the folder; one inside the project is git-ignored, as git must not hold the data DVC stores."""
    from dvc.config_schema import RelPath

    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", remote_url):
        raise ConfigError(f"data.dvc_remote {remote_url!r}: expected a local directory or s3://bucket/prefix")
    root = Path(repo.root_dir)
    directory = (root / Path(remote_url).expanduser()).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GanzooError(f"DVC remote {directory}: cannot create the directory ({_reason(exc)})") from None
    if directory.is_relative_to(root) and directory != root:
        repo.scm.ignore(str(directory))  # a no-op when a .gitignore already covers it
    return RelPath(str(directory))  # RelPath: DVC saves it relative to .dvc/, so the repository can move


def _probe_s3(remote_url: str, endpoint_url: str | None) -> None:
    """List one key under the remote with one attempt, so a wrong endpoint or bucket fails in seconds, not minutes."""
    import botocore.session
    from botocore.config import Config

    bucket, _, prefix = remote_url[5:].partition("/")
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint_url, config=Config(**_S3_PROBE_CONFIG)
    )
    client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)


def _push(repo: Any, target: str, shown: str, remote_url: str, endpoint_url: str | None) -> int:
    at = f" (endpoint {_redact(endpoint_url)})" if endpoint_url else ""
    try:
        if remote_url.startswith("s3://"):
            _probe_s3(remote_url, endpoint_url)
        return repo.push(targets=[target], remote=REMOTE_NAME)
    except Exception as exc:
        raise GanzooError(f"DVC push to remote {shown}{at} failed: {_redact(_reason(exc))}") from None


# --- tracking ----------------------------------------------------------------------------


def _commit(repo: Any, prepared: Path) -> tuple[str, str]:
    """Commit the stage whose output is ``prepared``, or `dvc add` it; returns (push target, md5)."""
    from dvc.exceptions import OutputNotFoundError

    try:
        (out,) = repo.find_outs_by_path(str(prepared))
    except OutputNotFoundError:
        out = None
    if out is not None and not out.stage.is_data_source:
        target = out.stage.addressing  # "prepare", or "sub/dvc.yaml:prepare"
        # force: a changed output is the point, not a reason to prompt; relink=False: the files just
        # written stay as they are instead of being checked out again from the cache.
        stages = repo.commit(target, force=True, relink=False)
    else:
        stages = repo.add(str(prepared))
        target = stages[0].addressing  # "data/prepared.dvc"
    (out,) = [o for stage in stages for o in stage.outs if o.fs_path == str(prepared)]
    return target, out.hash_info.value


# --- helpers -----------------------------------------------------------------------------


def _relative(root: Path, prepared_dir: str | Path) -> str:
    path = (root / Path(prepared_dir).expanduser()).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ConfigError(f"data.prepared_dir {str(prepared_dir)!r}: expected a folder inside the project root {root}")
    return path.relative_to(root).as_posix()


def _inside_git(path: Path) -> bool:
    return any((directory / ".git").exists() for directory in (path, *path.parents))


def _git_toplevel(path: Path) -> Path:
    return Path(_git(path, "rev-parse", "--show-toplevel")).resolve()


def _git(cwd: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise GanzooError("git: not found on PATH; install git to version data with DVC") from None
    except subprocess.CalledProcessError as exc:
        raise GanzooError(f"git {' '.join(args)} in {cwd} failed: {exc.stderr.strip()[:200]}") from None
    return result.stdout.strip()


@contextmanager
def _dvc_repo(root: Path, doing: str) -> Iterator[Any]:
    """Open the DVC repo at ``root`` with the working directory there, quiet, with one-line errors.

    DVC's Python API, like its CLI, resolves some paths against the working directory
    (committing a stage writes its run cache through a relative "dvc.yaml"), and fails
    when run from outside the repository. DVC's own experiment code chdirs the same way;
    the lock keeps two of our calls from interleaving their chdirs.
    """
    from dvc.repo import Repo

    if not root.is_dir():
        raise _not_a_repo(root)
    with _CWD_LOCK, _quiet_dvc(), _dvc_errors(doing, root):
        previous = os.getcwd()
        os.chdir(root)
        try:
            with Repo(str(root)) as repo:
                yield repo
        finally:
            os.chdir(previous)


@contextmanager
def _quiet_dvc() -> Iterator[None]:
    """Raise DVC's loggers from INFO to WARNING for the call (this also hides its progress bars).

    Importing dvc sets its loggers to INFO with its own stdout handlers; a logger someone set
    to DEBUG is left alone.
    """
    raised = [logger for logger in map(logging.getLogger, _NOISY_LOGGERS) if logger.getEffectiveLevel() == logging.INFO]
    levels = [logger.level for logger in raised]
    for logger in raised:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(raised, levels):
            logger.setLevel(level)


def _not_a_repo(directory: Path) -> ConfigError:
    return ConfigError(f"{directory} is not a git/DVC repository: run `git init && dvc init` there, or `ganzoo init`")


@contextmanager
def _dvc_errors(doing: str, root: Path) -> Iterator[None]:
    """Turn DVC's exceptions (not a repo, overlapping outputs, a held lock…) into one line."""
    from dvc.exceptions import DvcException, NotDvcRepoError

    try:
        yield
    except NotDvcRepoError:
        raise _not_a_repo(root) from None
    except DvcException as exc:
        raise GanzooError(f"{doing} failed: {_redact(_reason(exc))}") from None


def _redact(text: str) -> str:
    """Drop user:password@ from any URL in ``text``."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)


def _reason(exc: BaseException) -> str:
    """The exception as one line: DVC's messages may span several (e.g. a list of overlapping stages)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
