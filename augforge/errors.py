"""Errors that reach the user: each message names the file/row/value and says the fix."""


class AugforgeError(Exception):
    """Base class; the CLI prints these without a traceback and exits with status 2."""


class ConfigError(AugforgeError):
    """A wrong name, key or value in the run config or on the command line."""


class DataError(AugforgeError):
    """Bad input data: a file, row or value that cannot be used as it is."""


class TrainingError(AugforgeError):
    """Training cannot go on (NaN/inf loss, ...); the last good checkpoint is kept."""


class EvaluationError(AugforgeError):
    """An evaluation cannot run as asked (missing data, unknown metric, unusable generator)."""
