"""Errors a user can fix. The CLI prints their message as one line and exits non-zero, no traceback."""


class GenrecError(Exception):
    """Base class for errors caused by input (data, config, arguments) rather than by a bug."""


class DataError(GenrecError):
    pass


class ConfigError(GenrecError):
    pass


class StorageError(GenrecError):
    """A file cannot be written or read back: a full disk, a read-only place, a damaged run file."""
