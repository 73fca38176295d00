"""The one exception type users see as ``ds-helper: error: ...``."""


class LaunchError(Exception):
    """A mistake in the user's input or environment: printed as one clear line, never as a traceback."""

    def __init__(self, message: str) -> None:
        # Messages quote what the user gave (a token, a file's text, a variable's value); a newline or another
        # control character in it would break the one line, so it is shown escaped, as repr() shows it.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))
