"""CPU-list parsing and formatting (``bind.cores``, sysfs ``cpulist`` files).

Standard library only: this runs on every rank's start-up path.

Accepted spellings (Hydra hands ``bind.cores`` over as any of these):

* a string in the cpuset/taskset syntax: ``'0-31'``, ``'1,3-5,7'``, ``'0-31:2'`` (stride, util-linux
  ``taskset``/``cpulist_parse`` meaning: every 2nd CPU of 0..31); ASCII whitespace around items,
  dashes and colons is ignored;
* an ``int`` (one CPU);
* a list/tuple (or any non-string ``Sequence``, e.g. OmegaConf's ``ListConfig``) of ints and/or such strings.

Unlike DeepSpeed's ``parse_range_list``, items may overlap or come in any order:
the result is always the sorted set. The kernel's ``a-b:u/g`` group syntax is not accepted (nobody types it
and it is easy to misread as a stride).
"""

from __future__ import annotations

# What collections.abc re-exports, from the module the interpreter has loaded at start-up (os imports it):
# collections.abc itself would import collections on a binding rank.
from _collections_abc import Sequence

from ds_helper.rank.errors import LaunchError

TYPE_CHECKING = False  # a binding rank parses core lists: typing, collections.abc and re are not imported
if TYPE_CHECKING:
    from collections.abc import Iterable

# CPU ids must be below this. Linux caps NR_CPUS at 8192 on x86-64 (MAXSMP); 65536 leaves headroom for any
# machine while letting a typo like ``0-99999999999`` fail before anything is allocated.
MAX_CPUS = 65536

# At most 6 digits per number so int() never sees a huge string (Python 3.11 raises ValueError past 4300).
_MAX_DIGITS = 6
_SPACE = " \t\n\r\f\v"  # ASCII white space, allowed around an item's dashes and colons


def _item_numbers(item: str) -> list[str] | None:
    """The numbers of ``N``, ``N-M`` or ``N-M:S`` as digit strings, or None for anything else.

    ASCII digits only: ``str.isdigit`` alone would accept e.g. Arabic-Indic digits, which int() happily converts.
    """
    first, dash, rest = item.partition("-")
    parts = [first]
    if dash:
        last, colon, stride = rest.partition(":")
        parts += [last, stride] if colon else [last]
    numbers = [part.strip(_SPACE) for part in parts]
    return numbers if all(n.isascii() and n.isdigit() for n in numbers) else None


def _err(what: str, message: str) -> LaunchError:
    return LaunchError(f"{what}: {message}")


def _quoted(text: str, limit: int = 40) -> str:
    """Quote user text for a one-line message: repr() escapes newlines, long input is shortened."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _quoted_value(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_id(cpu: int, what: str, shown: str) -> None:
    if cpu >= MAX_CPUS:
        raise _err(
            what,
            f"CPU id {cpu} in {shown} is too large (CPU ids must be below {MAX_CPUS})",
        )


def _add_text(text: str, mask: bytearray, what: str) -> None:
    """Mark the CPUs named by one cpuset string in ``mask`` (a bytearray of MAX_CPUS flags)."""
    if not text.strip():
        raise _err(what, f"empty CPU list {_quoted(text)} (expected e.g. '0-31' or '0-3,8-11')")
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise _err(what, f"empty item in {_quoted(text)} (doubled or trailing comma?)")
        numbers = _item_numbers(item)
        if numbers is None:
            raise _err(
                what,
                f"{_quoted(item)} is not a CPU number or range (expected forms: 3, 0-31, 0-31:2, joined by commas)",
            )
        if any(len(number) > _MAX_DIGITS for number in numbers):
            raise _err(what, f"number too large in {_quoted(item)} (CPU ids must be below {MAX_CPUS})")
        start = int(numbers[0])
        end = int(numbers[1]) if len(numbers) > 1 else start
        stride = int(numbers[2]) if len(numbers) > 2 else 1
        if end < start:
            raise _err(what, f"reversed range {_quoted(item)}")
        if stride < 1:
            raise _err(what, f"stride must be at least 1 in {_quoted(item)}")
        _check_id(end, what, _quoted(item))
        # Slice assignment marks the whole range in C: no per-CPU Python loop, no big intermediate list.
        count = len(range(start, end + 1, stride))
        mask[start : end + 1 : stride] = b"\x01" * count


def _add_value(value: object, mask: bytearray, what: str) -> None:
    # bool is a subclass of int: `bind.cores=true` must not silently mean CPU 1.
    if isinstance(value, bool):
        raise _err(what, f"expected a CPU id or a range string, got the boolean {value}")
    if isinstance(value, int):
        if value < 0:
            raise _err(what, f"negative CPU id {value}")
        _check_id(value, what, str(value))
        mask[value] = 1
        return
    if isinstance(value, str):
        _add_text(value, mask, what)
        return
    raise _err(
        what,
        f"expected a CPU id or a range string, got {type(value).__name__} {_quoted_value(value)}",
    )


def parse_cpus(value: object, *, what: str = "bind.cores") -> tuple[int, ...]:
    """Parse any accepted spelling of a CPU list into a sorted tuple of unique CPU ids.

    ``what`` names the setting in error messages (e.g. ``bind.cores`` or a sysfs path).
    Raises LaunchError for anything else: reversed ranges, garbage, empty input, bools, floats, None,
    nested lists, zero strides, ids >= MAX_CPUS.
    """
    mask = bytearray(MAX_CPUS)
    if isinstance(value, (str, int)):
        _add_value(value, mask, what)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        # Any sequence that is not a str: list, tuple, OmegaConf ListConfig (not imported here on purpose).
        if len(value) == 0:
            raise _err(what, "empty CPU list []")
        for item in value:
            if isinstance(item, (str, int)):
                _add_value(item, mask, what)
            else:
                raise _err(
                    what,
                    f"list items must be CPU ids or range strings, got {type(item).__name__} {_quoted_value(item)}",
                )
    elif value is None:
        raise _err(what, "no CPU list given (None)")
    else:
        raise _err(
            what,
            f"expected a CPU list like '0-3,8-11', an int or a list, got {type(value).__name__} {_quoted_value(value)}",
        )
    # bytes.find skips runs of zeros in C, so a sparse mask is cheap to read back.
    cpus: list[int] = []
    pos = mask.find(1)
    while pos != -1:
        cpus.append(pos)
        pos = mask.find(1, pos + 1)
    return tuple(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """Compact canonical form of a CPU set: sorted, runs as ``a-b``, joined by commas (``0-3,8-11``).

    This is the kernel's ``cpulist`` format (and numactl/taskset accept it). An empty set gives ``''``.
    ``parse_cpus(format_cpus(s)) == tuple(sorted(set(s)))`` for every non-empty set of valid ids.
    """
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
