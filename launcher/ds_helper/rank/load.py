"""Reading a plan: ``--plan FILE`` and a job's ``DS_HELPER_PLAN``, every field checked as a composed plan is.

Standard library only, and no ``json`` package on success (it imports ``re``): this runs on every rank.
"""

from __future__ import annotations

from ds_helper.rank.checks import check_plan
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.plan import PLAN_FORMAT, Plan, plan_from_data

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_PLAN_CHARS = 16 << 20
"""A plan is a screenful of JSON (15,000 script arguments are about 1 MB): bounds what a wrong file costs."""


def _loads(text: str) -> Any:
    """``json.loads``, without importing the ``json`` package (its decoder and encoder import ``re``) on success.

    CPython's C scanner, which ``json.loads`` itself runs, reads a well-formed plan. Anything else (a damaged
    file, another Python without ``_json``) goes through ``json.loads``, whose messages say what is wrong; the
    C scanner's own errors need ``json.decoder`` imported first.
    """
    try:
        from _json import make_scanner

        scan = make_scanner(_ScanSettings())  # type: ignore[arg-type]  # typeshed: any object with its fields
        value, end = scan(text, len(text) - len(text.lstrip(_JSON_SPACE)))
        if not text[end:].strip(_JSON_SPACE):
            return value
    except Exception:  # re-read below, for json's message
        pass
    import json

    return json.loads(text, parse_constant=_constant)


_JSON_SPACE = " \t\n\r"


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _ScanSettings:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``: strict JSON, plain dicts, no NaN."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)


def plan_from_json(text: str, where: str = "plan") -> Plan:
    if len(text) > MAX_PLAN_CHARS:
        raise LaunchError(f"{where}: not a ds-helper plan (larger than {MAX_PLAN_CHARS} characters)")
    try:
        data = _loads(text)
    except ValueError as exc:
        raise LaunchError(f"{where}: not a ds-helper plan (invalid JSON: {exc})") from None
    except RecursionError:
        raise LaunchError(f"{where}: not a ds-helper plan (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or "plan" not in data:
        found = data.get("format") if isinstance(data, dict) else None
        raise LaunchError(f"{where}: plan format {found!r} is not the format {PLAN_FORMAT} this ds-helper reads")
    plan = plan_from_data(data["plan"], where)
    try:
        check_plan(plan)  # as strictly as make_plan checks a composed one
    except LaunchError as exc:
        raise LaunchError(f"{where}: {exc}") from None
    return plan


def load_plan(path: str) -> Plan:
    """``--plan FILE``: the plan saved by ``--save-plan``, or one ``LaunchError`` saying what is wrong with it."""
    where = f"--plan {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_PLAN_CHARS + 1)  # /dev/zero or a huge file: read no more than a plan can be
    except OSError as exc:
        raise LaunchError(f"{where}: cannot read the plan: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LaunchError(f"{where}: not a ds-helper plan (not UTF-8 text)") from None
    return plan_from_json(text, where)
