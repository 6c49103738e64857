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
