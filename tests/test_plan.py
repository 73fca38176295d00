"""Saved plans: ``--save-plan FILE`` composes once, ``--plan FILE`` starts a rank with the standard library only.

The equivalence tests are the contract: for every config of the matrix and every recorded environment, a rank
started from the saved plan gets exactly what a rank started from the overrides gets (in process, and as the real
installed ``ds-helper`` printing its dry run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import (
    DATA,
    DS_HELPER,
    SCRIPTS,
    assert_user_error,
    clean_env,
    ds,
    inside,
    json_lines,
    load_recorded,
    mpich,
    openmpi,
)
from ds_helper.compose.overrides import compose_request
from ds_helper.compose.planner import make_plan
from ds_helper.rank.argv import parse_argv
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.load import plan_from_json
from ds_helper.rank.plan import PLAN_FORMAT, Plan, plan_to_json
from ds_helper.rank.resolve import resolve

HEAVY = {"hydra", "omegaconf", "yaml", "antlr4"}

# (id, overrides without script=, script override, extra args after --)
CONFIGS = [
    ("auto", [], "script=show.py", []),
    ("mpich", ["launcher=mpich"], "script=show.py", ["--lr", "3e-4"]),
    ("openmpi-port", ["launcher=openmpi", "master.port=4242"], "script=show.py", []),
    ("slurm", ["launcher=slurm"], "script=show.py", []),
    ("env-set-unset", ["env.FOO=a b $(x) 'q'", "~env.HOME"], "script=show.py", ["x=1"]),
    ("args", ["args=[--epochs,'2']", "master.addr=head0"], "script=show.py", ["--lr", "3e-4"]),
    ("module", ["module=true", "log.all_ranks=true"], "script=pkg.hello", ["a"]),
    ("no-unbuffered", ["unbuffered=false", "master.port=1234"], "script=show.py", []),
]
ENV_FILES = sorted((DATA / "env").glob("*.json"))
RECORDED = {p.stem: load_recorded(p) for p in ENV_FILES}
# One rank of a few managers for the subprocess runs (every recorded rank is used in process), plus standalone.
SUBPROCESS_ENVS = ["mpich-hydra-2ranks", "openmpi-4-2ranks", "pals-pbs-mpiexec-2x2", "torchrun-2x2", "standalone"]


def plan_for(*args: str) -> Plan:
    """The plan the command line ``ds-helper ARGS`` makes, as the CLI makes it (env.* included)."""
    with inside(SCRIPTS):
        request = parse_argv(list(args))
        return make_plan(*compose_request(request.overrides, request.script, request.env, request.dry_run))


def _outcome(plan, env: Dict[str, str], extra: List[str], reader) -> object:
    try:
        return resolve(plan, env, extra, read_file=reader)
    except LaunchError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("case", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_plan_through_json_resolves_exactly_like_the_composed_one(case) -> None:
    _, overrides, script, extra = case
    plan = plan_for(*overrides, script)
    again = plan_from_json(plan_to_json(plan))
    assert again == plan
    for name, (_, ranks, reader) in RECORDED.items():
        for env, _expect in ranks:
            assert _outcome(again, env, extra, reader) == _outcome(plan, env, extra, reader), name
    assert _outcome(again, {"PATH": "/bin"}, extra, None) == _outcome(plan, {"PATH": "/bin"}, extra, None)


def _env_of(name: str, tmp_path: Path) -> Dict[str, str]:
    """A recorded rank's environment on top of a clean one, its host files written for real under tmp_path."""
    if name == "standalone":
        return clean_env()
    doc, ranks, _ = RECORDED[name]
    env = dict(ranks[-1][0])
    for key, value in env.items():
        if value.startswith("/recorded/"):
            real = tmp_path / value[len("/recorded/") :]
            real.write_text(doc["files"][value[len("/recorded/") :]])
            env[key] = str(real)
    return clean_env(**env)


@pytest.mark.parametrize("case", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_plan_dry_run_prints_what_the_composed_dry_run_prints(case, tmp_path: Path) -> None:
    _, overrides, script, extra = case
    plan_file = tmp_path / "plan.json"
    saved = ds(*overrides, script, "--save-plan", str(plan_file))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == "" and f"plan saved to {plan_file}" in saved.stderr
    shown = 0
    for name in SUBPROCESS_ENVS:
        env = _env_of(name, tmp_path)
        composed = ds(*overrides, script, "--dry-run", "--", *extra, env=env)
        planned = ds("--plan", str(plan_file), "--dry-run", "--", *extra, env=env)
        assert (planned.returncode, planned.stdout, planned.stderr) == (
            composed.returncode,
            composed.stdout,
            composed.stderr,
        ), name
        shown += "ds-helper dry run" in composed.stdout
    assert shown >= 1  # not only errors compared (an explicit launcher refuses the other managers' variables)


def test_dry_run_can_be_stored_in_the_plan_and_script_args_of_the_save_come_first(tmp_path: Path) -> None:
    plan_file = tmp_path / "p.json"
    assert ds("--dry-run", "--save-plan", str(plan_file), "show.py", "--a").returncode == 0
    result = ds("--plan", str(plan_file), "--", "--b")
    assert result.returncode == 0 and "ds-helper dry run" in result.stdout
    assert "command: " in result.stdout and result.stdout.rstrip().endswith("show.py --a --b")


@pytest.mark.parametrize("manager", ["mpich", "openmpi"])
def test_real_ranks_start_from_a_plan(manager: str, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert ds("script=show.py", "--save-plan", str(plan_file), "--", "--lr", "3e-4").returncode == 0
    run = {"mpich": mpich, "openmpi": openmpi}[manager]
    result = run(2, DS_HELPER, "--plan", str(plan_file), "--", "x")
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["NODE_RANK"]) for r in rows] == [
        ("0", "0", "2", "0"),
        ("1", "1", "2", "0"),
    ]
    assert all(r["argv"] == ["--lr", "3e-4", "x"] and r["MASTER_ADDR"] == "127.0.0.1" for r in rows)
    assert result.stderr.count(f"launcher={manager}:") == 1, result.stderr


@pytest.mark.mpi
def test_exit_code_passes_through_a_plan_under_mpi(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert ds("script=exit_with.py", "--save-plan", str(plan_file), "--", "3").returncode == 0
    assert mpich(2, DS_HELPER, "--plan", str(plan_file)).returncode == 3


# --- the per-rank path imports the standard library only ----------------------------------------------------


@pytest.fixture(scope="module")
def saved_plan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert ds("script=show.py", "--save-plan", str(path)).returncode == 0
    return path


def test_a_plan_run_loads_no_hydra_omegaconf_or_yaml(saved_plan: Path) -> None:
    code = (
        "import json, sys\n"
        "from ds_helper.cli import main\n"
        "try:\n"
        f"    main(['--plan', {str(saved_plan)!r}, '--dry-run'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SCRIPTS, env=clean_env())
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "ds_helper.rank.resolve" in modules and "ds_helper.rank.become" in modules  # the plan path really ran
    assert not {m.split(".")[0] for m in modules} & HEAVY
    assert "ds_helper.compose.config" not in modules


@pytest.mark.parametrize(("overrides", "loaded"), [([], []), (["bind.cores=0"], ["placement", "topology"])])
def test_binding_modules_load_only_when_binding_is_asked_for(tmp_path: Path, overrides: list, loaded: list) -> None:
    path = tmp_path / "plan.json"
    assert ds("script=show.py", *overrides, "--save-plan", str(path)).returncode == 0
    code = (
        "import json, os, sys\n"
        "from ds_helper.rank.load import load_plan\n"
        "from ds_helper.rank.resolve import resolve\n"
        f"resolve(load_plan({str(path)!r}), os.environ, [])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ds_helper.rank.bind.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SCRIPTS, env=clean_env())
    assert result.returncode == 0, result.stderr
    modules = {name.rsplit(".", 1)[-1] for name in json.loads(result.stdout)}
    assert set(loaded) <= modules and (loaded or not modules), modules


def test_importtime_of_a_plan_run_has_no_hydra_line(saved_plan: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ds_helper.cli", "--plan", str(saved_plan), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line]
    assert "ds_helper.rank.resolve" in imported
    assert not {name.split(".")[0] for name in imported} & HEAVY, imported


# --- what a rank imports: an allow-list, so the per-rank path cannot grow unnoticed ---------------------------

LAUNCHER = Path(__file__).resolve().parent.parent / "launcher"
# The modules a rank adds to a bare interpreter on the way to exec, beyond what ``site`` imports anyway: ds-helper's
# rank-path modules, the C JSON scanner, str.format's parser and ctypes' C core (die_with_manager's prctl). No
# typing, dataclasses, re, enum, json package, ctypes package, argparse, difflib, runpy; nothing of compose/ or job/.
RANK_PATH = {
    "ds_helper",
    "ds_helper.cli",
    "ds_helper.rank",
    "ds_helper.rank.argv",
    "ds_helper.rank.become",
    "ds_helper.rank.bind",  # binding's face only: its modules are imported when binding is asked for
    "ds_helper.rank.checks",  # a plan is checked like a composed config
    "ds_helper.rank.describe",  # the rank's launch line
    "ds_helper.rank.errors",
    "ds_helper.rank.hostlist",
    "ds_helper.rank.inherit",  # standard streams and signal state before exec
    "ds_helper.rank.inprocess",  # run_mode=inprocess only
    "ds_helper.rank.load",
    "ds_helper.rank.plan",
    "ds_helper.rank.records",
    "ds_helper.rank.resolve",
    "ds_helper.rank.textfile",
    "__future__",
    "_string",  # str.format's parser, built in: how log names are checked without `string` or `re`
    "_json",
    "_ctypes",
    "gc",  # built in: ds-helper's command turns automatic collection off while it starts (launcher/ds-helper)
}
# With binding asked for, binding's modules too, and the ASCII codec the /sys files are read with: nothing else.
BINDING = RANK_PATH | {
    "ds_helper.rank.bind.cpuset",
    "ds_helper.rank.bind.placement",
    "ds_helper.rank.bind.topology",
    "encodings.ascii",
}
# Named by themselves as well, so that a longer allow-list cannot let them in unnoticed.
NEVER_ON_A_RANK = {
    "dataclasses",
    "typing",
    "re",
    "enum",
    "inspect",
    "ast",
    "pathlib",
    "json",
    "hydra",
    "omegaconf",
    "yaml",
}
# The real command with the exec itself replaced by a report: the process exec starts cannot see these modules.
_REPORT_AT_EXEC = (
    "import os, sys\n"
    "def report(program, argv, env):\n"
    "    print(' '.join(sorted(sys.modules)))\n"
    "    raise SystemExit(0)\n"
    "os.execve = report\n"
    "from ds_helper.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_LIST_MODULES = "import sys; print(' '.join(sorted(sys.modules)))\n"


def _modules(*argv: str) -> set:
    """sys.modules of ``python -S ARGV`` (no site: this machine's .pth files import certifi, re and more)."""
    result = subprocess.run(
        [sys.executable, "-S", *argv],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        env=clean_env(PYTHONPATH=str(LAUNCHER)),
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "case, overrides, allowed",
    [
        ("exec", [], RANK_PATH),
        ("exec, binding asked for", ["bind.cores=0"], BINDING),
        ("inprocess", ["run_mode=inprocess"], RANK_PATH),
    ],
)
def test_a_rank_imports_only_what_the_allow_list_names(
    case: str, overrides: List[str], allowed: set, tmp_path: Path
) -> None:
    script = tmp_path / "script.py"
    script.write_text(_LIST_MODULES)  # in process, the script itself reports (it imports nothing of its own)
    plan = tmp_path / "plan.json"
    assert ds("log.quiet=true", f"script={script}", *overrides, "--save-plan", str(plan)).returncode == 0
    if case == "inprocess":
        imported = _modules(str(LAUNCHER / "ds-helper"), "--plan", str(plan))
    else:
        imported = _modules("-c", _REPORT_AT_EXEC, "--plan", str(plan))
    added = imported - _modules("-c", "import os, sys\n" + _LIST_MODULES)
    assert "ds_helper.rank.become" in added and ("ds_helper.rank.bind.placement" in added) == ("binding" in case)
    assert added <= allowed, sorted(added - allowed)
    assert not {name.split(".")[0] for name in added} & NEVER_ON_A_RANK


def test_the_plan_records_have_the_schemas_fields_and_types() -> None:
    """One source of truth: the schema's dataclasses; the plan's records (what a rank loads) must match them."""
    import dataclasses
    import types
    import typing

    from ds_helper.compose import schema
    from ds_helper.rank import plan as records

    def shape(kind: object) -> object:
        origin = typing.get_origin(kind)
        if origin in (typing.Union, types.UnionType):
            (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            return ("optional", shape(inner))
        if origin in (list, dict):
            return (origin.__name__, *map(shape, typing.get_args(kind)))
        if kind in (typing.Any, object):
            return "any"
        return kind.__name__ if dataclasses.is_dataclass(kind) or isinstance(kind, type) else kind

    names = [
        "HostSource",
        "StartSpec",
        "ExitCodesSpec",
        "LauncherSpec",
        "ExportSpec",
        "MasterSpec",
        "LogSpec",
        "BindSpec",
    ]
    for name in names:
        hints = typing.get_type_hints(getattr(schema, name))
        expected = {f.name: shape(hints[f.name]) for f in dataclasses.fields(getattr(schema, name))}
        record = getattr(records, name)
        assert {field: shape(kind) for field, kind in record.FIELDS.items()} == expected, name
        assert list(record.FIELDS) == list(expected), name  # same order: the JSON reads the same
    config = typing.get_type_hints(schema.Config)
    shared = set(Plan.FIELDS) & set(config)
    assert shared >= {"args", "env", "export", "master", "bind", "log", "dry_run", "run_mode", "die_with_manager"}
    assert {name: shape(Plan.FIELDS[name]) for name in shared} == {name: shape(config[name]) for name in shared}


def test_launcher_options_read_for_auto_are_what_hydra_reads() -> None:
    """launcher=auto parses its candidates' YAML itself (compose._group_option): the same data as Hydra's source."""
    from ds_helper.compose.config import _group_option, group_options, hydra_context
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    with hydra_context():
        names = group_options("launcher")
        (source,) = [s for s in GlobalHydra.instance().config_loader().get_sources() if s.is_config("launcher/mpich")]
        for name in names:
            hydra_data = OmegaConf.to_container(source.load_config(f"launcher/{name}").config, resolve=False)
            assert _group_option("launcher", name) == hydra_data, name
    assert len(names) >= 10


def test_a_record_field_of_a_type_the_loader_cannot_check_fails_when_the_class_is_defined() -> None:
    from ds_helper.rank.records import Record

    for kind in (tuple[int], int | str, dict[int, str], complex):
        with pytest.raises(TypeError, match="Bad.x"):
            type("Bad", (Record,), {"__annotations__": {"x": kind}})


def test_every_plan_field_is_checked_by_its_type_on_load(saved_plan: Path) -> None:
    document = json.loads(saved_plan.read_text())
    for name in Plan.FIELDS:
        damaged = json.loads(json.dumps(document))
        damaged["plan"][name] = {"not": "this"} if not isinstance(damaged["plan"][name], dict) else [1]
        with pytest.raises(LaunchError, match=rf"^plan\.{name}: "):
            plan_from_json(json.dumps(damaged))
        del damaged["plan"][name]
        with pytest.raises(LaunchError, match=rf"missing field\(s\) {name}$"):
            plan_from_json(json.dumps(damaged))
    nested = json.loads(json.dumps(document))
    nested["plan"]["launchers"][0]["hosts"] = [{"var": "X", "format": "lines", "file": "yes", "skip": 0}]
    with pytest.raises(LaunchError, match=r"^plan\.launchers\[0\]\.hosts\[0\]\.file: 'yes' is not of type bool$"):
        plan_from_json(json.dumps(nested))


# --- errors: one line, exit 2 -----------------------------------------------------------------------------------


def _other_format(tmp_path: Path, saved_plan: Path) -> Path:
    data = json.loads(saved_plan.read_text())
    data["format"] = PLAN_FORMAT + 1
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    return path


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_missing_damaged_and_foreign_plans_are_one_clear_line(tmp_path: Path, saved_plan: Path) -> None:
    good = saved_plan.read_bytes()
    cases = [
        (tmp_path / "nope.json", "cannot read the plan: No such file or directory"),
        (tmp_path, "cannot read the plan"),
        (_write(tmp_path, "cut.json", good[: len(good) // 2]), "not a ds-helper plan (invalid JSON"),
        (_write(tmp_path, "bin.json", b"\xff\xfe\x00"), "not a ds-helper plan"),
        (_write(tmp_path, "empty.json", b""), "not a ds-helper plan"),
        (_write(tmp_path, "list.json", b"[1]"), "is not the format"),
        (_other_format(tmp_path, saved_plan), f"plan format {PLAN_FORMAT + 1} is not the format {PLAN_FORMAT}"),
        (_write(tmp_path, "type.json", good.replace(b'"auto":true', b'"auto":"yes"')), "auto: 'yes' is not"),
        (_write(tmp_path, "extra.json", good.replace(b'"auto":', b'"bogus": 1, "auto":')), "unknown field(s) bogus"),
    ]
    for path, fragment in cases:
        result = ds("--plan", str(path))
        assert result.returncode == 2, (path, result)
        message = assert_user_error(result, f"--plan {path}", fragment)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert message


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["launcher=mpich"], "is frozen: overrides (launcher=mpich) cannot change it"),
        (["env.A=1", "~env.B"], "overrides (env.A, ~env.B)"),
        (["--launcher", "openmpi"], "overrides (launcher=openmpi)"),
        (["show.py"], "names its script already; 'show.py'"),
        (["--cfg", "job"], "--cfg cannot be combined with --plan"),
        (["--save-plan", "x.json"], "--save-plan cannot be combined with --plan"),
    ],
)
def test_plan_with_things_that_would_change_it_is_refused(args: List[str], fragment: str, saved_plan: Path) -> None:
    result = ds("--plan", str(saved_plan), *args)
    assert result.returncode == 2
    assert_user_error(result, fragment)


def test_save_plan_refuses_cfg_and_reports_unwritable_files(tmp_path: Path) -> None:
    assert_user_error(ds("--cfg", "job", "--save-plan", str(tmp_path / "p"), "script=show.py"), "--cfg")
    result = ds("script=show.py", "--save-plan", str(tmp_path / "no" / "dir" / "p.json"))
    assert_user_error(result, "cannot write the plan")
    assert_user_error(ds("--save-plan", str(tmp_path / "p.json")), "no script")
    assert list(tmp_path.iterdir()) == []
