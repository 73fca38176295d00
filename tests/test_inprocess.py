"""run_mode=inprocess: the script in ds-helper's own interpreter gives what exec gives, where the rules allow."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from conftest import DS_HELPER, SCRIPTS, clean_env, ds, json_lines, mpich

MODES = ("run_mode=exec", "run_mode=inprocess")


def _same_view(rows: list) -> list:
    # The pid differs (two processes), and -u is emulated, so sys.orig_argv has no -u in process.
    return [{k: v for k, v in row.items() if k not in ("pid", "unbuffered")} for row in rows]


@pytest.mark.mpi
def test_script_sees_the_same_ranks_arguments_env_and_affinity_under_mpich() -> None:
    views = []
    for mode in MODES:
        result = mpich(
            2,
            DS_HELPER,
            mode,
            "env.EXTRA=a b",
            "~env.HOME",
            "bind.cores=0-1",
            "show.py",
            "--lr",
            "3e-4",
            env=clean_env(SHOW_ALSO="EXTRA,HOME"),
        )
        assert result.returncode == 0, result.stderr
        views.append(_same_view(json_lines(result.stdout)))
    assert views[0] == views[1]
    assert [row["EXTRA"] for row in views[1]] == ["a b", "a b"] and views[1][0]["HOME"] is None


def test_module_mode_and_exit_codes() -> None:
    for mode in MODES:
        assert json_lines(ds(mode, "module=true", "script=pkg.hello", "--", "x").stdout) == [
            {"module": "__main__", "argv": ["x"], "RANK": "0"}
        ]
        assert ds(mode, "exit_with.py", "3").returncode == 3


def test_an_uncaught_exception_prints_pythons_traceback_and_exits_1() -> None:
    outputs = [ds("log.quiet=true", mode, "boom.py") for mode in MODES]
    assert [r.returncode for r in outputs] == [1, 1]
    assert outputs[0].stderr == outputs[1].stderr  # no ds-helper or runpy frames in the traceback
    assert outputs[1].stderr.startswith("Traceback") and "ValueError: boom" in outputs[1].stderr


def test_ctrl_c_ends_the_script_by_sigint_as_python_does() -> None:
    for mode in MODES:
        proc = subprocess.Popen(
            [DS_HELPER, "log.quiet=true", mode, "sleeper.py"],
            cwd=SCRIPTS,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in err, mode


def test_the_environment_is_the_one_exec_gives_in_the_script_and_its_children(tmp_path) -> None:
    """Variables removed, changed and added in place (run._become_environment), with 300 of the caller's own."""
    (tmp_path / "environ.py").write_text(
        "import json, os, subprocess, sys\n"
        "child = subprocess.run([sys.executable, '-c', 'import json, os; print(json.dumps(dict(os.environ)))'],"
        " capture_output=True, text=True).stdout\n"
        "print(json.dumps([dict(os.environ), json.loads(child)]))\n"
    )
    env = clean_env(**{f"CALLER_{index}": f"value {index}" for index in range(300)}, GONE="x")
    overrides = ("log.quiet=true", "~env.GONE", "env.CALLER_7=changed", "env.ADDED=new", "environ.py")
    views = [json.loads(ds(mode, *overrides, env=env, cwd=tmp_path).stdout) for mode in MODES]
    exec_view, inprocess_view = views
    assert exec_view[0] == exec_view[1]  # what a fresh interpreter started from the exec'd environment sees
    assert inprocess_view == exec_view
    seen = exec_view[0]
    assert "GONE" not in seen and seen["CALLER_7"] == "changed" and seen["ADDED"] == "new"
    assert seen["CALLER_299"] == "value 299" and seen["WORLD_SIZE"] == "1"


def test_the_script_has_automatic_garbage_collection_as_in_a_fresh_interpreter(tmp_path) -> None:
    """ds-helper's command starts with collection off (launcher/ds-helper); the script gets it back on, with
    ds-helper's own objects frozen out of its collections in process (docs/design.md)."""
    (tmp_path / "gc_state.py").write_text(
        "import gc\nprint(gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())\n"
    )
    outputs = [ds("log.quiet=true", mode, "gc_state.py", cwd=tmp_path).stdout.split() for mode in MODES]
    assert outputs[0] == ["True", "(700,", "10,", "10)", "0"]
    assert outputs[1][:4] == outputs[0][:4] and int(outputs[1][4]) > 1000


def test_a_user_module_named_like_ds_helpers_package_is_the_users(tmp_path) -> None:
    (tmp_path / "launcher.py").write_text("WHO = 'user'\n")
    (tmp_path / "main.py").write_text("import launcher\nprint(launcher.WHO)\n")
    result = ds("log.quiet=true", "run_mode=inprocess", "main.py", cwd=tmp_path)
    assert result.stdout == "user\n", result.stderr


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        (["no_python=true", "script=true"], "no_python=true runs a program"),
        (["log.tee=true", "script=show.py"], "log.tee=true needs a supervising process"),
        (["env.PYTHONHASHSEED=0", "script=show.py"], "env sets PYTHONHASHSEED"),
        (["python=/usr/bin/python3", "script=show.py"], "the plan's interpreter /usr/bin/python3 is not the one"),
    ],
)
def test_the_dry_run_says_when_a_fresh_interpreter_is_needed(setting: list, reason: str) -> None:
    result = ds("--dry-run", "run_mode=inprocess", *setting)
    assert f"the script runs by exec ({reason}" in result.stdout, result.stdout


def test_the_dry_run_says_when_the_script_runs_in_process() -> None:
    assert "the script runs in ds-helper's interpreter" in ds("--dry-run", "run_mode=inprocess", "show.py").stdout


def test_unknown_run_mode() -> None:
    result = ds("run_mode=fork", "show.py")
    assert result.returncode == 2 and "run_mode=fork: expected one of exec, inprocess" in result.stderr


def test_saved_plan_keeps_the_mode(tmp_path) -> None:
    saved = tmp_path / "plan.json"
    subprocess.run(
        [DS_HELPER, "run_mode=inprocess", "--save-plan", str(saved), "show.py"],
        cwd=SCRIPTS,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(saved.read_text())
    assert plan["plan"]["run_mode"] == "inprocess"
