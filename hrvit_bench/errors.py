"""The one exception type the CLI turns into a one-line message and exit code 2, and how errors become one line."""


class UsageError(ValueError):
    """Bad input from the user: shown as one line, never as a traceback (unless --debug)."""


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line (its type's name when it has no message): what a one-line error shows."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
