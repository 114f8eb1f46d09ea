"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input from the user: shown as one line, never as a traceback (unless --debug)."""
