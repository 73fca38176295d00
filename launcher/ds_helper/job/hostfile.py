"""Host names and hostfiles as users bring them from other launchers (docs/jobs.md, "Hostfiles").

One rule for every host name, whether from ``job.hosts`` or a hostfile line: it reaches the manager's command
line (and ssh behind it) as a word and every rank as ``MASTER_ADDR``, so it must be one plain name or IPv4
address, never an option, a list or an address with colons.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from ds_helper.rank.checks import MAX_COUNT
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.textfile import read_text

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_MAX_HOST_LENGTH = 253  # a DNS name (RFC 1035)
_SLOT_KEYS = ("slots",)
_MAX_SLOT_KEYS = ("max_slots", "max-slots")  # Open MPI's spellings; DeepSpeed's hostfile has slots only


def check_host(name: str, where: str) -> str:
    """``name`` when it is a host name or an IPv4 address; otherwise one error saying what a host name is."""
    if ":" in name or name.startswith("["):
        raise LaunchError(
            f"{where}: {name!r} looks like an IPv6 address; give the host's name instead (managers read ':' as "
            "the start of a slot count, and MASTER_ADDR takes a name or an IPv4 address)"
        )
    if not name or len(name) > _MAX_HOST_LENGTH or name[0] in "-." or not set(name) <= _HOST_CHARS:
        raise LaunchError(
            f"{where}: {name!r} is not a host name (ASCII letters, digits, '.', '-' and '_', "
            "not starting with '-' or '.')"
        )
    return name


def check_hosts(hosts: List[str], where: str) -> List[str]:
    """Every name checked, none listed twice."""
    for host in hosts:
        check_host(host, where)
    _once(hosts, lambda index: where)
    return hosts


def _once(hosts: List[str], where: Callable[[int], str]) -> None:
    seen = set()
    for index, host in enumerate(hosts):
        if host in seen:
            raise LaunchError(f"{where(index)}: host {host} is listed twice")
        seen.add(host)


def _count(word: str, value: str, where: str) -> int:
    """A slot count: ASCII digits only (``str.isdigit`` also takes '²' and '٢'), from 1 up."""
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or not 1 <= int(value) < MAX_COUNT:
        raise LaunchError(f"{where}: {word!r}: the count must be a whole number from 1, in ASCII digits")
    return int(value)


def _entry(words: List[str], where: str) -> Tuple[str, Optional[int]]:
    """One line's host and slot count: ``host``, ``host:N`` (MPICH), ``host slots=N [max_slots=M]`` (Open MPI)."""
    first = words[0]
    host, slots = first, None
    if first.count(":") == 1 and not first.startswith("["):  # host:N; an IPv6 address has two colons or more
        host, _, count = first.partition(":")
        slots = _count(first, count, where)
    check_host(host, where)
    most: Optional[int] = None
    for word in words[1:]:
        key, equals, value = word.partition("=")
        if key in _SLOT_KEYS and equals and slots is None:
            slots = _count(word, value, where)
        elif key in _MAX_SLOT_KEYS and equals and most is None:
            most = _count(word, value, where)
        else:
            raise LaunchError(f"{where}: {word!r}: expected 'host slots=N [max_slots=M]' or 'host:N', each count once")
    if most is not None and slots is not None and most < slots:
        raise LaunchError(f"{where}: max_slots={most} is below slots={slots}")
    return host, slots


def parse_hostfile(text: str, where: str) -> List[Tuple[str, Optional[int]]]:
    """Hosts and slot counts of a hostfile in the forms of DeepSpeed, Open MPI and MPICH; ``#`` comments, blank
    lines, CRLF line ends and a UTF-8 byte order mark are taken as those tools take them."""
    entries: List[Tuple[str, Optional[int]]] = []
    numbers: List[int] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if words:
            entries.append(_entry(words, f"{where}:{number}"))
            numbers.append(number)
    if not entries:
        raise LaunchError(f"{where}: no hosts in the file")
    _once([host for host, _ in entries], lambda index: f"{where}:{numbers[index]}")
    return entries


def read_hostfile(path: str) -> str:
    """The file's text, or one error: unreadable, not UTF-8, or larger than a hostfile can be (never cut)."""
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LaunchError(f"job.hostfile={path}: cannot read it ({reason})") from None
