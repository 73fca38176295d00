"""The installed ds-helper, run for real: help, config, dry run, errors, exit codes, signals, no files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF, DS_HELPER, SCRIPTS, assert_user_error, clean_env, ds, json_lines
from ds_helper.compose.schema import key_help


def test_standalone_launch_becomes_the_script_with_its_arguments() -> None:
    result = ds("script=show.py", "--", "--lr", "3e-4", "x=1")
    assert result.returncode == 0, result.stderr
    [row] = json_lines(result.stdout)
    assert row["argv"] == ["--lr", "3e-4", "x=1"]
    assert (row["RANK"], row["WORLD_SIZE"], row["MASTER_ADDR"], row["MASTER_PORT"]) == ("0", "1", "127.0.0.1", "29500")
    assert row["unbuffered"] is True
    assert "ds-helper: rank 0/1 launcher=local:" in result.stderr


def test_same_pid_no_helper_left() -> None:
    proc = subprocess.Popen([DS_HELPER, "show.py"], cwd=SCRIPTS, env=clean_env(), stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    [row] = json_lines(out)
    assert row["pid"] == proc.pid  # exec, not a child


def test_module_and_no_python_and_python_choice(tmp_path: Path) -> None:
    result = ds("module=true", "script=pkg.hello", "--", "a")
    assert json_lines(result.stdout)[0] == {"module": "__main__", "argv": ["a"], "RANK": "0"}
    tool = tmp_path / "tool.sh"
    tool.write_text('#!/bin/sh\necho "tool $RANK $*"\n')
    tool.chmod(0o755)
    env = clean_env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert ds("no_python=true", "script=tool.sh", "--", "x", env=env).stdout == "tool 0 x\n"
    assert ds(f"python={sys.executable}", "unbuffered=false", "show.py").returncode == 0


def test_log_keys() -> None:
    assert ds("log.quiet=true", "show.py").stderr == ""
    # Rank 1 of 2 logs its command line only with log.all_ranks=true (rank 0 always does).
    rank_1 = clean_env(PMI_RANK="1", PMI_SIZE="2", MPI_LOCALRANKID="1", MPI_LOCALNRANKS="2")
    assert ds("show.py", env=rank_1).stderr == ""
    assert "launcher=mpich" in ds("log.all_ranks=true", "show.py", env=rank_1).stderr


def test_exit_code_of_the_script_is_ds_helpers() -> None:
    assert ds("exit_with.py", "3").returncode == 3
    assert ds("exit_with.py", "0").returncode == 0


def test_sigterm_to_the_ds_helper_pid_reaches_the_scripts_handler() -> None:
    proc = subprocess.Popen(
        [DS_HELPER, "on_sigterm.py"],
        cwd=SCRIPTS,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == f"ready {proc.pid}\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert out == f"got signal {int(signal.SIGTERM)}\n"
    assert proc.returncode == 7


def test_dry_run_shows_sources_changes_and_command_and_starts_nothing() -> None:
    result = ds("--dry-run", "env.FOO=a b", "~env.HOME", "show.py", "--x")
    assert result.returncode == 0
    out = result.stdout
    assert "launcher=local" in out and "RANK=0" in out and "FOO=a b" in out and "HOME=(unset)" in out
    assert out.rstrip().endswith("show.py --x")
    assert '"RANK"' not in out  # show.py never ran


def test_cfg_job_prints_the_composed_config() -> None:
    result = ds("--cfg", "job", "launcher=mpich", "env.X=1", "show.py")
    assert result.returncode == 0
    assert "name: mpich" in result.stdout and "script: show.py" in result.stdout and "X: '1'" in result.stdout


def test_help_shows_every_key_and_every_group_option_with_its_description() -> None:
    out = ds("--help").stdout
    lines = [line.strip() for line in out.splitlines()]
    for key, text in key_help().items():
        assert re.split(r"\s{2,}", next(line for line in lines if line.split()[:1] == [key]), maxsplit=1) == [key, text]
    for group in ("launcher", "bind"):
        for path in sorted((CONF / group).glob("*.yaml")):
            description = yaml.safe_load(path.read_text())["description"]
            assert description.strip(), path
            assert f"{path.stem} {description}" in [" ".join(line.split(maxsplit=1)) for line in lines], path


def test_running_creates_no_file_anywhere_it_could(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "s.py").write_text("print('hi')\n")
    env = clean_env(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    for args in (["s.py"], ["--cfg", "job", "s.py"], ["--dry-run", "s.py"], ["launcher=nosuch", "s.py"], ["--help"]):
        ds(*args, env=env, cwd=work)
    assert sorted(p.name for p in work.iterdir()) == ["s.py"]
    assert list(home.iterdir()) == []


ERRORS = [
    (["launcher=nosuch", "show.py"], ["launcher=nosuch: no such option", "mpich", "openmpi"]),
    (["launchr=mpich", "show.py"], ["unknown key 'launchr'", "did you mean 'launcher'"]),
    (["bind.corse=1", "show.py"], ["corse"]),
    (["+bind.corse=1", "show.py"], ["corse"]),
    (["+x=y", "show.py"], ["unknown key 'x'"]),
    (["dry_run=maybe", "show.py"], ["dry_run", "maybe"]),
    (["args=[a", "show.py"], ["args=[a"]),
    ([], ["no script"]),
    (["nope.py"], ["script 'nope.py' not found"]),
    (["python=/no/such/python", "show.py"], ["python=/no/such/python: not an executable file"]),
    (["no_python=true", "script=no-such-tool"], ["'no-such-tool' is not an executable file on PATH"]),
    (["module=true", "no_python=true", "script=x"], ["cannot be combined"]),
    (["-m", "show.py"], ["multirun is not supported"]),
    (["--bogus", "show.py"], ["unknown option --bogus"]),
    (["script=show.py", "show.py"], ["script given twice"]),
    (["launcher=openmpi", "show.py"], ["launcher=openmpi: rank not found", "OMPI_COMM_WORLD_RANK"]),
]


@pytest.mark.parametrize(("args", "fragments"), ERRORS, ids=[" ".join(a) or "nothing" for a, _ in ERRORS])
def test_user_errors_are_one_clear_line(args: list, fragments: list) -> None:
    result = ds(*args)
    assert result.returncode == 2
    assert_user_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "PMIX_RANK": "1"}, ["PMIX_RANK=1 disagrees"]),
        ({"PMI_RANK": "x", "MPI_LOCALRANKID": "0"}, ["PMI_RANK='x' is not a non-negative integer"]),
        ({"PMI_RANK": "5", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0"}, ["rank 5", "world_size 2"]),
        ({"PMI_RANK": "0"}, ["no process manager recognised", "PMI_RANK=0"]),
        ({"MPI_LOCALRANKID": "0"}, ["launcher=mpich: rank not found", "PMIX_RANK, PMI_RANK"]),
    ],
)
def test_environment_errors_are_one_clear_line(env: dict, fragments: list) -> None:
    result = ds("show.py", env=clean_env(**env))
    assert result.returncode == 2
    assert_user_error(result, *fragments)


def test_debug_switch_shows_the_traceback() -> None:
    result = ds("--debug", "nope.py")
    assert result.returncode != 0 and "Traceback" in result.stderr and "LaunchError" in result.stderr
    result = ds("nope.py", env=clean_env(DS_HELPER_DEBUG="1"))
    assert "Traceback" in result.stderr
    result = ds("nope.py", "--debug")  # the script's argument, not ds-helper's flag
    assert "Traceback" not in result.stderr and result.stderr.startswith("ds-helper: error: script 'nope.py'")


def test_the_lean_modules_load_without_hydra() -> None:
    """The compose path loads Hydra on demand; importing the rest of the pipeline does not."""
    code = (
        "import sys, ds_helper.cli, ds_helper.rank.plan, ds_helper.rank.resolve, ds_helper.rank.become, ds_helper.rank.argv;"
        "print(sorted({'hydra', 'omegaconf', 'yaml'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/").stdout
    assert out.strip() == "[]"
