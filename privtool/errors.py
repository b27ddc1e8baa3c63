"""The one domain exception: the CLI maps it to a one-line message and exit code 1."""


class PrivtoolError(Exception):
    """A user-facing error: bad input, missing data, corrupt artifact.

    The message is one line that names what is wrong and how to fix it.
    """
