"""Team recipes: real compositions from temporary flat team folders, through the installed ``ds-helper``."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Dict

import pytest
from conftest import DS_HELPER, assert_user_error, clean_env, ds, json_lines, mpich

REPO = Path(__file__).parent.parent
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def team_env(*folders: Path, **extra: str) -> Dict[str, str]:
    return clean_env(DS_HELPER_RECIPE_PATH=os.pathsep.join(str(f) for f in folders), **extra)


BASE = """\
    # @package _global_
    description: the base of our jobs
    defaults:
      - override /launcher: mpich
      - _self_
    bind:
      cores: 0-1
    env: {FROM_BASE: base}
    args: [--from-base]
    """

OURJOB = """\
    # @package _global_
    # Our job: the base, plus our own arguments.
    defaults:
      - /recipe/base@_here_
      - _self_
    args: [--from-ourjob]
    env: {FROM_OURJOB: ourjob}
    """


@pytest.fixture
def team(tmp_path: Path) -> Path:
    folder = tmp_path / "team"
    write(folder, "base", BASE)
    write(folder, "ourjob", OURJOB)
    return folder


def cfg(*args: str, env: Dict[str, str]) -> str:
    result = ds("--cfg", "job", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ------------------------------------------------------------------------------------------------ composing


def test_a_recipe_built_on_a_recipe_composes_both(team: Path) -> None:
    out = cfg("recipe=ourjob", "script=show.py", env=team_env(team))
    assert "name: mpich" in out  # the base's override /launcher
    assert "cores: 0-1" in out  # the base's key
    assert "- --from-ourjob" in out and "--from-base" not in out  # a list is replaced, not appended
    assert "FROM_BASE: base" in out and "FROM_OURJOB: ourjob" in out  # mappings merge


def test_a_relative_base_name_works_too(tmp_path: Path, team: Path) -> None:
    write(team, "other", "# @package _global_\ndefaults: [base, _self_]\nscript: x.py\n")
    assert "name: mpich" in cfg("recipe=other", env=team_env(team))


def test_the_command_line_beats_the_recipe(team: Path) -> None:
    out = cfg("recipe=ourjob", "launcher=openmpi", "bind.cores=5", "env.FROM_BASE=cli", "show.py", env=team_env(team))
    assert "name: openmpi" in out and "cores: 5" in out and "FROM_BASE: cli" in out


def test_a_recipe_given_as_a_path(tmp_path: Path, team: Path) -> None:
    path = write(tmp_path / "elsewhere", "single", "# @package _global_\ndefaults: [/recipe/base@_here_]\n")
    assert "cores: 0-1" in cfg(f"recipe={path}", "show.py", env=team_env(team))
    result = ds("--cfg", "job", "recipe=elsewhere/single.yaml", "show.py", env=team_env(team), cwd=tmp_path)  # relative
    assert result.returncode == 0 and "cores: 0-1" in result.stdout, result.stderr
    # A recipe given as a path finds its bases in its own folder first (a checkout not on the path).
    write(tmp_path / "elsewhere", "base", BASE.replace("0-1", "3"))
    assert "cores: 3" in cfg(f"recipe={path}", "show.py", env=team_env(team))


def test_earlier_folders_shadow_later_ones_and_the_shipped_recipes(tmp_path: Path, team: Path) -> None:
    first = tmp_path / "first"
    write(first, "base", BASE.replace("0-1", "7"))
    write(first, "debug", "# @package _global_\ndescription: our own debug\nscript: mine.py\n")
    env = team_env(first, team)
    assert "cores: 7" in cfg("recipe=ourjob", "show.py", env=env)  # ourjob's base comes from the first folder
    assert "cores: 0-1" in cfg("recipe=ourjob", "show.py", env=team_env(team, first))
    out = cfg("recipe=debug", env=env)
    assert "script: mine.py" in out and "dry_run: false" in out  # the shipped debug recipe is shadowed
    listing = ds("--list-recipes", env=env).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "our own debug" in lines["debug"] and "shadows debug of shipped" in lines["debug"]
    assert "[shadowed by" in lines["(debug)"] and "shipped" in lines["(debug)"]
    assert "[shadowed by" in lines["(base)"] and str(team) in lines["(base)"]
    assert "the base of our jobs" in lines["base"] and str(first) in lines["base"]
    assert "Our job: the base, plus our own arguments." in lines["ourjob"]  # the leading comment
    assert all(name in lines for name in SHIPPED)


def test_an_unknown_recipe_lists_the_available_ones(team: Path) -> None:
    message = assert_user_error(ds("recipe=nosuch", "show.py", env=team_env(team)), "recipe=nosuch: no such recipe")
    assert "base" in message and "ourjob" in message and "debug" in message


def test_a_recipe_building_on_an_unknown_one(team: Path) -> None:
    write(team, "broken", "# @package _global_\ndefaults: [/recipe/nosuch@_here_]\n")
    assert_user_error(ds("recipe=broken", "show.py", env=team_env(team)), "builds on recipe 'nosuch'")


def test_a_recipe_building_on_itself(team: Path) -> None:
    write(team, "loop", "# @package _global_\ndefaults: [/recipe/loop2@_here_]\n")
    write(team, "loop2", "# @package _global_\ndefaults: [loop]\n")
    assert_user_error(ds("recipe=loop", "show.py", env=team_env(team)), "builds on itself", "loop -> loop2 -> loop")


def test_a_broken_unrelated_recipe_does_not_break_a_launch(team: Path) -> None:
    write(team, "broken", "key: [unclosed\n")
    assert "cores: 0-1" in cfg("recipe=ourjob", "show.py", env=team_env(team))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_composes(name: str) -> None:
    result = ds("--cfg", "job", f"recipe={name}", "script=show.py")
    assert result.returncode == 0, result.stderr
    assert "description: " in result.stdout


def test_check_passes_on_the_shipped_recipes() -> None:
    result = ds("--check", str(REPO / "recipes"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(SHIPPED) >= 5
    everything = ds("--check")  # no argument: every recipe on the path (the shipped ones)
    assert everything.returncode == 0, everything.stderr


def test_the_installed_wheel_ships_the_recipes() -> None:
    result = ds("--list-recipes", env=clean_env())
    assert all(f"{name} " in result.stdout for name in SHIPPED), result.stdout
    assert f"  recipe: {', '.join(SHIPPED)} (recipe=NAME" in ds("--help").stdout


def test_a_debug_recipe_launches_nothing(tmp_path: Path) -> None:
    result = ds("recipe=debug", "show.py")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [] and "dry run" in (result.stdout + result.stderr).lower()


@pytest.mark.mpi
def test_a_recipe_from_a_flat_team_folder_under_real_mpich(team: Path) -> None:
    env = team_env(team, SHOW_ALSO="FROM_BASE")
    result = mpich(2, DS_HELPER, "recipe=ourjob", "script=show.py", "--", "x", env=env)
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["WORLD_SIZE"], r["argv"], r["FROM_BASE"]) for r in rows] == [
        ("0", "2", ["--from-ourjob", "x"], "base"),
        ("1", "2", ["--from-ourjob", "x"], "base"),
    ]
    assert "launcher=mpich" in result.stderr


# ------------------------------------------------------------------------------------------------- --check


def check(*paths: Path, env: Dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = ds("--check", *map(str, paths), env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, [line for line in result.stderr.splitlines() if line.startswith("ds-helper: error: ")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [1, 2\nb: 3\n", "bad.yaml:3: YAML syntax"),
        ("bind:\n  corse: 1\n", "bad.yaml:3: Key 'corse' not in 'BindSpec'"),
        ("dry_run: maybe\n", "bad.yaml:2: Value 'maybe' is not a valid bool"),
        ("launchr: mpich\n", "bad.yaml:2: Key 'launchr' not in 'Config'"),
        ("defaults:\n  - override /launcher: nosuch\n", "launcher=nosuch: no such option (available: auto,"),
        ("defaults:\n  - override /bind: nosuch\n", "bind=nosuch: no such option"),
        ("master:\n  port: [1]\n", "bad.yaml:3: Value '[1]' of type 'ListConfig' could not be converted to Integer"),
        ("# @package launcher\nname: x\n", "a recipe is always '_global_'"),
        ("- a\n- b\n", "a recipe is a YAML mapping"),
        ("", "empty file"),
        ("description: [1]\n", "bad.yaml:2: description: must be a string"),
    ],
)
def test_check_reports_each_mistake_with_file_and_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, "bad", "# @package _global_\n" + text if not text.startswith(("#", "-")) and text else text)
    code, errors = check(path)
    assert code == 2 and len(errors) == 1 and fragment in errors[0], errors


def test_check_of_a_folder_reports_one_line_per_problem(tmp_path: Path) -> None:
    write(tmp_path, "good", "# @package _global_\ndescription: fine\ndefaults: [{override /launcher: openmpi}]\n")
    write(tmp_path, "bad1", "dry_run: maybe\n")
    write(tmp_path, "bad2", "x: [\n")
    write(tmp_path, "uses_good", "# @package _global_\ndefaults: [good]\n")  # bases from the checked folder
    result = ds("--check", str(tmp_path))
    assert result.returncode == 2
    assert sorted(result.stdout.split()) == sorted(
        ["ok", str(tmp_path / "good.yaml"), "ok", str(tmp_path / "uses_good.yaml")]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("ds-helper: error: ")]
    assert len(errors) == 2 and "bad1.yaml:1: Value 'maybe'" in errors[0] and "bad2.yaml:" in errors[1]


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    code, errors = check(tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: no such file" in errors[0]


def test_a_recipe_without_a_script_passes_check_but_cannot_launch(tmp_path: Path) -> None:
    write(tmp_path, "noscript", "# @package _global_\ndefaults: [{override /launcher: mpich}]\n")
    assert check(tmp_path)[0] == 0
    assert_user_error(ds("recipe=noscript", env=team_env(tmp_path)), "no script")


# -------------------------------------------------------------------------------------------------- safety

REFUSED = [
    ("obj:\n  _target_: os.system\n", "_target_ refused"),
    ("env:\n  X: ${now:%H}\n", "resolver 'now' refused"),
    ("env:\n  X: ${hydra:runtime.cwd}\n", "resolver 'hydra' refused"),
    ("env:\n  X: 'a${oc.create:{a: 1}}'\n", "resolver 'oc.create' refused"),
    ("env:\n  X: ${oc.env:HOME,${ evil :x}}\n", "resolver 'evil' refused"),
    ("args: [!!python/object/apply:os.system [echo pwned]]\n", "tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("env: !!python/name:os.system\n", "refused: a recipe is plain data"),
    ("defaults:\n  - /../../etc/passwd\n", "defaults entry '/../../etc/passwd' refused"),
    ("defaults:\n  - /etc/passwd\n", "defaults entry '/etc/passwd' refused"),
    ("defaults:\n  - override /launcher: ../../../etc/passwd\n", "refused"),
    ("defaults:\n  - override /hydra/job_logging: default\n", "refused"),
    ("defaults:\n  - /recipe/..@_here_\n", "refused"),
    ("defaults:\n  - /launcher: mpich\n", "refused"),
    ("defaults:\n  - recipe/base\n", "refused"),  # relative to group recipe: would be recipe/recipe/base
    ("defaults: base\n", "defaults: must be a list"),
    ("hydra:\n  searchpath: [file:///etc]\n", "evil.yaml:2: hydra: refused"),
]


@pytest.mark.parametrize(("text", "fragment"), REFUSED)
def test_recipes_are_data(tmp_path: Path, text: str, fragment: str) -> None:
    team = tmp_path / "team"
    write(team, "base", BASE)
    write(team, "evil", "# @package _global_\n" + text)
    code, errors = check(team / "evil.yaml")
    assert code == 2 and fragment in errors[0], errors
    # ... and the same refusal at launch, before anything is composed or started.
    assert_user_error(ds("recipe=evil", "show.py", env=team_env(team)), fragment)


def test_harmless_resolvers_are_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "ok",
        """\
        # @package _global_
        env:
          A: ${oc.env:RECIPE_TEST_VALUE,fallback}
          B: ${oc.select:master.port,none}
          C: ${oc.decode:'"x"'}
        """,
    )
    out = cfg("recipe=ok", "show.py", env=team_env(tmp_path, RECIPE_TEST_VALUE="from-env"))
    assert "A: from-env" in out and "B: null" in out and "C: x" in out


# ---------------------------------------------------------------------------------------------- provenance


def test_provenance_names_the_layer_of_each_value(team: Path) -> None:
    result = ds("--provenance", "recipe=ourjob", "bind.cores=5", "env.X=1", "show.py", env=team_env(team))
    assert result.returncode == 0, result.stderr
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if not line.startswith("#")}
    assert lines["bind.cores"].endswith("# command line")
    assert lines["script"] == 'script: "show.py"  # command line'
    assert lines["env.X"].endswith("# command line")
    assert f"# recipe base ({team / 'base.yaml'})" in lines["env.FROM_BASE"]
    assert f"# recipe ourjob ({team / 'ourjob.yaml'})" in lines["args"]
    assert "launcher option mpich (conf/launcher/mpich.yaml)" in lines["launcher.priority"]
    assert lines["dry_run"].endswith("# default (schema)")
    assert f"# launcher=mpich  (recipe base ({team / 'base.yaml'}))" in result.stdout
    assert "# bind=default  (config.yaml default)" in result.stdout
    assert ds("--explain", "launcher=openmpi", "show.py").stdout.startswith("# launcher=openmpi  (command line)")


def test_a_mistake_inside_a_recipe_names_its_file_and_line_at_launch(team: Path) -> None:
    write(team, "typo", "# @package _global_\ndefaults: [base]\nbind:\n  corse: 1\n")
    assert_user_error(ds("recipe=typo", "show.py", env=team_env(team)), f"{team / 'typo.yaml'}:4: Key 'corse' not in")
    write(team, "typo2", "# @package _global_\ndefaults:\n  - override /launcher: mpihc\n")
    assert_user_error(ds("recipe=typo2", "show.py", env=team_env(team)), "launcher=mpihc: no such option")


@pytest.mark.mpi
def test_a_recipe_saved_into_a_plan_starts_ranks_without_composing(tmp_path: Path, team: Path) -> None:
    plan = tmp_path / "plan.json"
    saved = ds("recipe=ourjob", "script=show.py", "--save-plan", str(plan), env=team_env(team))
    assert saved.returncode == 0, saved.stderr
    result = mpich(2, DS_HELPER, "--plan", str(plan), "--", "y", env=clean_env())  # no recipe path needed now
    assert [r["argv"] for r in json_lines(result.stdout)] == [["--from-ourjob", "y"]] * 2, result.stderr


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("# @package _global_\nenv:\n  X: '1'\n" + BOMB, "values once YAML aliases are expanded"),
        ("# @package _global_\nargs: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than"),
        ("# @package _global_\nargs: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than 64 levels"),
        ("# @package _global_\ndescription: '" + "x" * (1 << 20) + "'\n", "larger than"),
    ],
    ids=["anchor-bomb", "deep-500", "deep-70", "huge-file"],
)
def test_hostile_yaml_is_refused_quickly(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    for args in (["--check", str(path)], [f"recipe={path}", "show.py"]):
        result = ds(*args, timeout=60)
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
