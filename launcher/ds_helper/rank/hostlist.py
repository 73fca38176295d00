"""Slurm's compressed host and count lists, read without expanding more than needed.

``node[01-04,07],gpu-a[1-2]`` names six hosts; ``2(x3),1`` says three nodes run 2 tasks and one runs 1. Every rank
reads these from its environment at start-up, so the functions walk the text instead of building lists: a
10,000-node allocation costs nothing extra.
"""

from __future__ import annotations

from ds_helper.rank.errors import LaunchError

# Plain string methods, not regular expressions: every rank of a Slurm job reads these, and ``re`` (with the
# ``enum`` it imports) would be most of ds-helper's own start-up time.


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets: ``a[1,2],b`` -> ``['a[1,2]', 'b']``."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"host list {text!r}: unbalanced ']'")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise LaunchError(f"host list {text!r}: unbalanced '['")
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _first_of_bracket(body: str, whole: str) -> str:
    first = body.split(",", 1)[0].strip()
    low, dash, high = first.partition("-")
    if not _is_number(low) or (dash and not _is_number(high)):
        raise LaunchError(f"host list {whole!r}: bad range {first!r}")
    if dash and int(high) < int(low):
        raise LaunchError(f"host list {whole!r}: reversed range {first!r}")
    return low  # keeps zero padding: node[01-04] -> node01


def first_host(text: str) -> str:
    """The first host a Slurm-style host list names (``node[01-04],x`` -> ``node01``)."""
    items = _split_top_level(text.strip())
    if not items:
        raise LaunchError(f"host list {text!r} is empty")
    # Each bracket group contributes its first value: rack[1-2]-n[3-4] -> rack1-n3.
    host, rest = "", items[0]
    while "[" in rest:
        before, _, inside = rest.partition("[")
        body, closed, rest = inside.partition("]")
        if not closed:  # an unclosed '[' is kept as it is
            rest = f"[{inside}"
            break
        host += before + _first_of_bracket(body, text)
    return host + rest


def first_in_lines(text: str, skip: int = 0) -> str | None:
    """The first non-empty line after ``skip`` of them (PBS node files, LSF rank files)."""
    hosts = (line.strip() for line in text.splitlines())
    for index, host in enumerate(h for h in hosts if h):
        if index >= skip:
            return host
    return None


def first_in_words(text: str, skip: int = 0) -> str | None:
    """The first space-separated word after ``skip`` of them (LSF's LSB_HOSTS)."""
    words = text.split()
    return words[skip] if len(words) > skip else None


def count_at(text: str, index: int) -> int:
    """Entry ``index`` of a Slurm count list: ``count_at('2(x3),1', 3) == 1``."""
    seen = 0
    for item in text.split(","):
        count, paren, times = item.strip().partition("(x")
        if not _is_number(count) or (paren and not (times.endswith(")") and _is_number(times[:-1]))):
            raise LaunchError(f"count list {text!r}: bad entry {item!r}")
        repeat = int(times[:-1]) if paren else 1
        if index < seen + repeat:
            return int(count)
        seen += repeat
    raise LaunchError(f"count list {text!r} has {seen} entries, no entry {index}")
