"""The one domain exception: the CLI maps it to a one-line message and exit code 1."""


class PrivtoolError(Exception):
    """A user-facing error: bad input, missing data, corrupt artifact.

    The message is one line that names what is wrong and how to fix it.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM (DVC, CI, ``kill``), raised by the CLI's handler so a stage ends as on Ctrl-C
    (staged output removed, exit 130).

    A subclass, not ``KeyboardInterrupt`` itself: CPython (3.11) remembers a bare
    ``KeyboardInterrupt`` that unwinds through any nested ``PyRun_String`` (C code evaluating
    Python), and under ``python -m`` then ends the process by SIGINT after our clean exit 130.
    It matches only the exact type, so a subclass keeps the exit code the CLI chose.
    """
