"""The one exception type users see as ``ds-helper: error: ...``."""


class LaunchError(Exception):
    """A mistake in the user's input or environment: printed as one clear line, never as a traceback."""
