"""Errors the suite reports as one clear message (what, where, how to fix) instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix; printed without a traceback. `exit_code` is the process exit code."""

    exit_code = 1

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class InventoryError(UserError):
    """The inventory is invalid; raised before any connection is opened (exit code 2)."""

    exit_code = 2


class PlatformError(UserError):
    """A host runs a distribution the suite does not support."""


class PreconditionError(UserError):
    """The selected hosts cannot be changed safely now (e.g. a dependency is down); nothing was changed."""

    exit_code = 2
