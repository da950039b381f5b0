"""The base class of errors meant for users: the CLI prints their message as one line."""


class OccoError(Exception):
    """A problem with the user's input or environment, explained in its message.

    The message says what went wrong, which file, and what to do. ``occo`` prints it on
    stderr as one line and exits non-zero, without a traceback.
    """


class OccoWarning(UserWarning):
    """Something the user should know that did not stop the work (one line, names the file).

    The library raises these with :func:`warnings.warn`; ``occo`` prints each distinct
    message once as a ``warning:`` line.
    """
