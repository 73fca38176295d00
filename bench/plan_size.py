"""How much a job's plan can carry: the encoding before (indented JSON, non-ASCII as \\u escapes) and now
(compact, UTF-8), against Linux's limit on one environment string (``DS_HELPER_PLAN=...``, 128 KiB).

    python bench/plan_size.py

Composes the plan of ``ds-helper job.ranks=2 show.py`` once (as a local job's ranks get it), then finds, for
each kind of content, the most that still fits in ``DS_HELPER_PLAN`` under each encoding. Sizes only: nothing
is timed, so the machine's load does not matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Tuple

from ds_helper.job.shape import Shape
from ds_helper.job.start import MAX_ARG_STRLEN, plan_size, rank_plan
from ds_helper.rank.load import load_plan
from ds_helper.rank.plan import PLAN_FORMAT, PLAN_VAR, Plan, plan_to_json

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "scripts" / "show.py"
Encode = Callable[[Plan], str]
Fill = Callable[[Plan, int], None]


def before(plan: Plan) -> str:
    """The encoding the plan had before: indent=1 and json's default ensure_ascii."""
    return json.dumps({"format": PLAN_FORMAT, "plan": plan.to_data()}, indent=1, sort_keys=True)


def base_plan() -> Plan:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "plan.json")
        subprocess.run(["ds-helper", "job.ranks=2", "--save-plan", path, str(SCRIPT)], check=True, capture_output=True)
        plan = load_plan(path)
    assert plan.fallback is not None
    return rank_plan(plan, plan.fallback, Shape(2, 1, 2, []), 29500, [])


def fits(encode: Encode, plan: Plan) -> bool:
    return plan_size(plan.launchers[0], encode(plan)) <= MAX_ARG_STRLEN


def most(encode: Encode, base: Plan, fill: Fill) -> int:
    """The largest n for which ``fill(plan, n)`` still fits (binary search: sizes grow with n)."""
    low, high = 0, 1 << 20
    while low < high:
        middle = (low + high + 1) // 2
        plan = Plan.from_data(base.to_data(), "plan")
        fill(plan, middle)
        if fits(encode, plan):
            low = middle
        else:
            high = middle - 1
    return low


NON_ASCII = "\u00e9t\u00e9 \u6f22\u5b57 "  # French and CJK text: 2- and 3-byte UTF-8 characters


def ascii_argument(plan: Plan, n: int) -> None:
    plan.args = ["x" * n]


def non_ascii_argument(plan: Plan, n: int) -> None:
    plan.args = [(NON_ASCII * (n // len(NON_ASCII) + 1))[:n]]


def env_entries(plan: Plan, n: int) -> None:
    plan.env = {f"VAR_{index}": f"value{index}" for index in range(n)}


CASES: Dict[str, Tuple[Fill, Callable[[int], str]]] = {
    "one ASCII script argument": (ascii_argument, lambda n: f"{n} bytes"),
    "one non-ASCII argument": (
        non_ascii_argument,
        lambda n: f"{len((NON_ASCII * (n // len(NON_ASCII) + 1))[:n].encode())} bytes",
    ),
    "env.VAR_i=value_i entries": (env_entries, lambda n: f"{n} entries"),
}


def main() -> int:
    base = base_plan()
    print(f"limit: {MAX_ARG_STRLEN} bytes for {PLAN_VAR}=... (Linux MAX_ARG_STRLEN, NUL included)")
    print(
        f"the plan of `ds-helper job.ranks=2 show.py`: {len(before(base).encode())} bytes before, "
        f"{len(plan_to_json(base).encode())} now"
    )
    print(f"{'what fits':<28} {'before':>16} {'now':>16} {'now/before':>11}")
    for name, (fill, unit) in CASES.items():
        old, new = most(before, base, fill), most(plan_to_json, base, fill)
        print(f"{name:<28} {unit(old):>16} {unit(new):>16} {new / old:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
