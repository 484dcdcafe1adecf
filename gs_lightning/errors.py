"""The one user-error type. A leaf: every layer may raise it, and only the CLI catches it."""


class UserError(Exception):
    """Something the user can fix: `where` is the config key or file, `what` says what is wrong and what to do.
    The CLI prints `error: <where>: <what>` and exits with status 2."""

    def __init__(self, where: str, what: str = ""):
        super().__init__(f"{where}: {what}" if what else where)
        self.where, self.what = where, what
