"""The one exception type for bad user input.

Everything a user can get wrong (a config key, an activation or init name, a depth, a path, a sweep file)
raises :class:`DelvingError` with a one-line message that names the bad value and what would be valid.
The command line turns it into that line on stderr and exit code 2, never a traceback.
"""


class DelvingError(ValueError):
    """Bad user input: the message is one line, names the offending key/value/path and the valid choices."""


def choices(valid) -> str:
    """Format valid choices for an error message: ``'a', 'b', 'c'``."""
    return ", ".join(repr(v) for v in sorted(valid))
