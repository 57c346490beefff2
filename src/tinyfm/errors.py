"""The one exception type the CLI turns into a clear message and exit code 2."""


class TinyfmError(Exception):
    """A user-facing error: bad input, a bad path or a bad setting.

    The message names the file, field or value and what was expected; the CLI prints it on one line
    (no traceback) and exits with status 2.
    """


class DataError(TinyfmError):
    """A data file or directory is missing, corrupt or inconsistent."""


class ConfigError(TinyfmError):
    """A setting (recipe field or CLI flag) has a value outside what is allowed."""
