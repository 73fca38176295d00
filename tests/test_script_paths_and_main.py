"""Script paths are paths, one clear line for each remaining mistake, --version, and run_mode=inprocess giving
``__main__`` what ``python SCRIPT`` gives it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import List

import pytest
from conftest import DS_HELPER, SCRIPTS, assert_user_error, clean_env, ds, json_lines, mpich

# --- script paths (item 12) --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        ["runs/lr=0.1/train.py"],  # Hydra's own output folders look like this
        ["script=runs/lr=0.1/train.py", "--"],  # the same path through script=: verbatim, not Hydra's grammar
        ["./runs/lr=0.1/train.py"],
        ["lr=0.1.py"],  # looks like an override, but the file exists: a script
    ],
)
def test_a_script_path_holding_an_equals_sign_runs_under_mpich(work: Path, given: List[str]) -> None:
    (work / "runs" / "lr=0.1").mkdir(parents=True)
    shutil.copy(SCRIPTS / "show.py", work / "runs" / "lr=0.1" / "train.py")
    shutil.copy(SCRIPTS / "show.py", work / "lr=0.1.py")
    result = mpich(2, DS_HELPER, *given, "--lr", "3e-4", cwd=work)
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [row["RANK"] for row in rows] == ["0", "1"] and all(row["argv"] == ["--lr", "3e-4"] for row in rows)


def test_a_script_whose_name_starts_with_a_dash(work: Path) -> None:
    shutil.copy(SCRIPTS / "show.py", work / "-train.py")
    assert json_lines(ds("./-train.py", "x", cwd=work).stdout)[0]["argv"] == ["x"]
    assert_user_error(ds("-train.py", cwd=work), "-train.py is taken for an option", "write ./-train.py")


@pytest.mark.parametrize("mode", [[], ["run_mode=inprocess"]])
@pytest.mark.parametrize("name", ["app", "app/"])
def test_a_folder_with_main_runs_as_python_runs_it(work: Path, mode: List[str], name: str) -> None:
    (work / "app").mkdir()
    shutil.copy(SCRIPTS / "show.py", work / "app" / "__main__.py")
    result = mpich(2, DS_HELPER, *mode, name, "a", cwd=work)
    assert result.returncode == 0, result.stderr
    assert [(row["RANK"], row["module"], row["argv"]) for row in json_lines(result.stdout)] == [
        ("0", "__main__", ["a"]),
        ("1", "__main__", ["a"]),
    ]


def test_a_folder_without_main_is_one_line(work: Path) -> None:
    (work / "runs").mkdir()
    assert_user_error(ds("runs", cwd=work), "script 'runs' is a folder without __main__.py")


def test_a_token_that_may_be_a_missing_script_says_how_to_write_it(work: Path) -> None:
    assert_user_error(ds("lr=0.1.py", cwd=work), "unknown key 'lr'", "written ./lr=0.1.py")


# --- messages (item 13) -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["~launcher", "show.py"], ["~launcher: the process manager cannot be removed", "launcher=NAME"]),
        (["~script", "show.py"], ["~script: the script cannot be removed"]),
        (["~master.port", "show.py"], ["~master.port: ", "master.port=VALUE"]),
        (["recipe@x=debug", "show.py"], ["recipe@x=debug: ds-helper's keys take no @package; write recipe=debug"]),
        (["launcher@x=", "show.py"], ["launcher@x=: ds-helper's keys take no @package"]),
        (["launcher=mpich", "launcher=local", "show.py"], ["launcher given 2 times: launcher=mpich, launcher=local"]),
        (["script=a.py", "script=show.py"], ["script given 2 times: script=a.py, script=show.py"]),
        (["--save-plan", "a.json", "--save-plan", "b.json", "show.py"], ["--save-plan given 2 times"]),
        (["--plan", "a.json", "--plan=b.json"], ["--plan given 2 times"]),
        (["--provenance", "--plan", "a.json"], ["--provenance cannot be combined with --plan"]),
    ],
)
def test_mistakes_are_one_line_naming_the_thing(work: Path, args: List[str], fragments: List[str]) -> None:
    result = ds(*args, cwd=work)
    assert_user_error(result, *fragments)
    assert sorted(p.name for p in work.iterdir()) == ["show.py"]  # nothing written


def test_log_dir_on_a_file_is_refused_before_the_launch_line(work: Path) -> None:
    result = ds("log.dir=show.py", "show.py", cwd=work)
    assert_user_error(result, "log.dir=show.py: not a folder")
    assert "launcher=" not in result.stderr  # no launch line for a launch that did not happen


def test_an_exec_failure_reaches_the_terminal_even_with_log_dir(work: Path) -> None:
    program = work / "not-a-program"
    program.write_bytes(b"\x00\x01 not an executable format\n")
    program.chmod(0o755)
    result = ds("log.quiet=true", f"log.dir={work / 'logs'}", "no_python=true", f"script={program}", cwd=work)
    assert_user_error(result, f"cannot run {program}: Exec format error")
    assert "Exec format error" not in (work / "logs" / "rank-0.err").read_text()


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_ds_helper_debug_off_values_mean_off(value: str) -> None:
    result = ds("nope.py", env=clean_env(DS_HELPER_DEBUG=value))
    assert_user_error(result, "script 'nope.py' not found")
    assert ds("nope.py", env=clean_env(DS_HELPER_DEBUG="1")).stderr.count("Traceback") == 1


def test_an_interpolation_error_in_a_recipe_names_its_file_and_line(work: Path) -> None:
    (work / "bad.yaml").write_text("# a team recipe\nmaster:\n  addr: ${nosuch.key}\n")
    (work / "grammar.yaml").write_text("env:\n  A: ok\n  B: ${oops\n")
    launch = assert_user_error(ds("recipe=./bad.yaml", "show.py", cwd=work))
    assert launch.endswith(f"{work / 'bad.yaml'}:3: Interpolation key 'nosuch.key' not found"), launch
    assert_user_error(ds("recipe=./grammar.yaml", "show.py", cwd=work), f"{work / 'grammar.yaml'}:3: ")
    checked = ds("--check", "bad.yaml", "grammar.yaml", cwd=work)
    assert "bad.yaml:3: Interpolation key 'nosuch.key' not found" in checked.stderr
    assert "ds-helper: error: grammar.yaml:3: " in checked.stderr


def test_check_and_list_recipes_agree_on_what_is_a_recipe(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    for name in ("ours.yaml", "with space.yaml", "other.yml", "-dash.yaml"):
        (team / name).write_text("# a recipe\nlog:\n  quiet: true\n")
    env = clean_env(DS_HELPER_RECIPE_PATH=str(team))
    listed = ds("--list-recipes", env=env).stdout
    checked = ds("--check", str(team), env=env)
    assert "ours" in listed and f"ok {team / 'ours.yaml'}" in checked.stdout
    for name in ("with space", "other", "-dash"):
        assert name not in listed and name not in checked.stdout + checked.stderr
        alone = ds("--check", str(team / (name + (".yml" if name == "other" else ".yaml"))), env=env)
        assert "a recipe file is NAME.yaml" in alone.stderr
    assert_user_error(ds("recipe=team/other.yml", "show.py", cwd=tmp_path, env=env), "a recipe file is NAME.yaml")


# --- --version (item 14) ------------------------------------------------------------------------------------------


def test_version_is_the_installed_one() -> None:
    result = ds("--version")
    assert (result.returncode, result.stdout) == (0, f"ds-helper {version('ds-helper')}\n")


def test_version_lookup_stays_off_the_per_rank_path() -> None:
    code = (
        "import sys, ds_helper.cli, ds_helper.rank.become, ds_helper.rank.tee, ds_helper.rank.inherit;"
        "print('importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "False", out.stderr


# --- run_mode=inprocess gives __main__ what python gives it (item 15) -----------------------------------------------


@pytest.mark.parametrize("given", ["main_globals.py", "./main_globals.py", "ABS", "app", "app/", "app.zip", "link.py"])
def test_inprocess_main_module_matches_python(tmp_path: Path, given: str) -> None:
    shutil.copy(SCRIPTS / "main_globals.py", tmp_path)
    (tmp_path / "app").mkdir()
    shutil.copy(SCRIPTS / "main_globals.py", tmp_path / "app" / "__main__.py")
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as archive:
        archive.write(SCRIPTS / "main_globals.py", "__main__.py")
    (tmp_path / "link.py").symlink_to(tmp_path / "app" / "__main__.py")
    script = str(tmp_path / "main_globals.py") if given == "ABS" else given

    def main_module(*mode: str) -> dict:
        result = ds("log.quiet=true", *mode, script, "x", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    by_python = main_module("run_mode=exec")
    assert by_python["builtins"] == "module" and by_python["argv0"] == script
    assert main_module("run_mode=inprocess") == by_python
