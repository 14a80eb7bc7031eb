"""The one error type the lab raises: a message for the user, printed without a traceback."""


class LabError(Exception):
    """A problem the user can fix (not root, range in use, no disk space ...)."""
