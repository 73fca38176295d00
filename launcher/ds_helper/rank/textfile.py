"""Small text files ds-helper reads (host lists, hostfiles, recipes, launcher files): one bound for all of them.

A file past the bound is refused, never cut: a host list cut mid-name would name a host that does not exist.
"""

MAX_TEXT_CHARS = 1 << 20
"""A screenful of settings or a node list; a megabyte is already absurd (bounds what a wrong path can cost)."""

_EFBIG = 27  # Linux's "File too large": the errno module is not imported on a rank for one number


class FileTooLarge(OSError):
    """The file is larger than MAX_TEXT_CHARS; its ``strerror`` says so, as OSError's do."""


def read_text(path: str, errors: str = "strict") -> str:
    """The file's text (UTF-8), at most MAX_TEXT_CHARS; OSError (FileTooLarge past the bound) or
    UnicodeDecodeError otherwise, for the caller to word."""
    with open(path, encoding="utf-8", errors=errors) as handle:
        text = handle.read(MAX_TEXT_CHARS + 1)
    if len(text) > MAX_TEXT_CHARS:
        raise FileTooLarge(_EFBIG, f"larger than {MAX_TEXT_CHARS} characters (refused, not cut)", path)
    return text
