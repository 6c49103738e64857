"""Errors that reach the user as one line."""


class GanzooError(Exception):
    """A user-facing failure: bad input, a missing file, an unreachable store.

    The message is one line that names the file, key, URL or value at fault and
    what was expected; the CLI prints it without a traceback.
    """


class ConfigError(GanzooError):
    """params.yaml or a --set override failed validation."""


class DataError(GanzooError):
    """A data source could not be read or prepared."""


class CheckpointError(GanzooError):
    """A checkpoint is missing, incomplete or does not match its family."""


class DivergedError(GanzooError):
    """A run diverged (non-finite losses) or its generator collapsed: it is never registered, and retrying the
    same stage would give the same answer."""


class StoreUnavailableError(GanzooError):
    """The MLflow store still failed after its retries (a locked SQLite file, a tracking server down)."""
