"""Hostile and random input: only LaunchError ever escapes, quickly, without huge allocations."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import plan_for
from ds_helper.compose.overrides import check_override_keys
from ds_helper.rank.argv import parse_argv
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.hostlist import count_at, first_host
from ds_helper.rank.load import plan_from_json
from ds_helper.rank.plan import plan_to_json
from ds_helper.rank.resolve import resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
PACKAGE = Path(__file__).resolve().parent.parent / "launcher" / "ds_helper"
PLAN = plan_for()
NAMES = sorted(
    {
        name
        for spec in PLAN.launchers
        for field in ("detect", "rank", "local_rank", "world_size", "local_world_size", "node_rank")
        for name in getattr(spec, field)
    }
    | {"SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NODELIST", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID"}
)
VALUES = st.one_of(
    st.integers(-5, 10).map(str),
    st.sampled_from(["", " ", "01", "1e3", "2(x3),1", "99999999999999999999", "node[1-4]", "-", "１"]),
    st.text(max_size=30),
)
TOKENS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "--",
            "-m",
            "--cfg",
            "job",
            "--launcher",
            "mpich",
            "script=x",
            "env.A=1",
            "~env.B",
            "bind.cores=0,1",
            "--plan",
            "x.json",
            "--save-plan",
            "--dry-run",
            "--bind_core_list",
            "+x=y",
        ]
    ),
)


@FUZZ
@given(st.lists(TOKENS, max_size=12))
def test_command_line_front_end(argv: list) -> None:
    try:
        request = parse_argv(argv)
        check_override_keys(request.overrides)
    except LaunchError as exc:
        assert str(exc).isprintable(), str(exc)  # one line, whatever the tokens held


def test_ten_thousand_arguments_pass_through_untouched() -> None:
    args = [f"--a{i}=é {i}" for i in range(10_000)]
    request = parse_argv(["train.py", *args])
    assert request.script_args == args


@FUZZ
@given(st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=8))
def test_environment_mapping(env: dict) -> None:
    try:
        launch = resolve(PLAN, env, [], read_file=lambda path: "")
    except LaunchError:
        return
    values = {name: launch.env.get(name) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    assert values["RANK"] is not None and values["LOCAL_RANK"] is not None
    if values["WORLD_SIZE"] is not None:
        assert int(values["RANK"]) < int(values["WORLD_SIZE"])
    if values["LOCAL_WORLD_SIZE"] is not None:
        assert int(values["LOCAL_RANK"]) < int(values["LOCAL_WORLD_SIZE"])


@FUZZ
@given(st.text(max_size=60), st.integers(0, 10**12))
def test_host_and_count_lists(text: str, index: int) -> None:
    for call in (lambda: first_host(text), lambda: count_at(text, index)):
        try:
            call()
        except LaunchError:
            pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_plan_loader_on_random_json(value: object) -> None:
    try:
        plan_from_json(json.dumps(value))
    except LaunchError:
        pass


@FUZZ
@given(st.data())
def test_plan_loader_on_damaged_real_plans(data: st.DataObject) -> None:
    document = json.loads(plan_to_json(PLAN))
    # Replace one value somewhere in the real plan with random JSON.
    node, key = document, "plan"
    path = []
    while isinstance(node[key], (dict, list)) and node[key] and data.draw(st.booleans()):
        node = node[key]
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
    node[key] = data.draw(JSON)
    try:
        plan = plan_from_json(json.dumps(document))
        resolve(plan, {"PMI_RANK": "0", "MPI_LOCALRANKID": "0", "PMI_SIZE": "1"}, [], read_file=lambda p: "")
    except LaunchError:
        pass


def test_no_shell_and_no_code_execution_anywhere_in_the_package() -> None:
    forbidden = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|\beval\(|(?<![.\w])exec\(|__import__\(")
    offenders = [
        f"{path.name}:{line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for line in path.read_text().splitlines()
        if forbidden.search(line)
    ]
    # The one exception: run_mode=inprocess runs the user's own script, the command they asked for.
    assert offenders == [
        "inprocess.py:exec(code, main.__dict__)  # the user's script, in this interpreter (run_mode=inprocess)"
    ]
    assert os.path.isdir(PACKAGE)
