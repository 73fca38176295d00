"""ds-helper's own words: the one exception users see as ``ds-helper: error: ...`` and the one way to write a line
on stderr. The bottom of the package: every wing imports it, it imports nothing of ds-helper's."""

import sys

TYPE_CHECKING = False  # every rank imports this module: typing is for mypy only
if TYPE_CHECKING:
    from typing import Optional, Sequence

PROGRAM = "ds-helper"


def _one_line(text: str) -> str:
    # Messages quote what the user gave (a token, a file's text, a variable's value); a newline or another
    # control character in it would break the one line, so it is shown escaped, as repr() shows it.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class LaunchError(Exception):
    """A mistake in the user's input or environment: printed as one clear line, never as a traceback.

    ``file`` (and ``line``, from 1) name where the mistake is when it is in a file (a recipe, a hostfile); the
    message then reads ``FILE:LINE: MESSAGE``, as compilers and linters write it.
    """

    def __init__(self, message: str, file: "Optional[str]" = None, line: "Optional[int]" = None) -> None:
        self.message = _one_line(message)
        self.file = file
        self.line = line
        where = "" if file is None else f"{file}:{line}: " if line else f"{file}: "
        super().__init__(_one_line(where) + self.message)

    @classmethod
    def at(cls, file: str, line: "Optional[int]", message: str) -> "LaunchError":
        """The mistake at ``file``:``line`` (line None: the file as a whole)."""
        return cls(message, file, line)


def line(text: str, kind: "Optional[str]" = None) -> str:
    """``ds-helper: KIND: TEXT`` (KIND: error, warning, note) or ``ds-helper: TEXT``."""
    return f"{PROGRAM}: {kind}: {text}" if kind else f"{PROGRAM}: {text}"


def say(text: str, kind: "Optional[str]" = None) -> None:
    """One line of ds-helper's own on stderr; a closed, full or broken stderr never stops the launch."""
    try:
        sys.stderr.write(line(text, kind) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def did_you_mean(word: str, options: "Sequence[str]") -> str:
    """`` (did you mean 'X'?)`` for the closest option, or nothing: only on a mistake, so difflib is imported here."""
    import difflib

    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
