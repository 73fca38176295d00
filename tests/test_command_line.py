"""ds-helper's own command line: what reaches Hydra and what reaches the script."""

import pytest
from ds_helper.rank.argv import parse_argv
from ds_helper.rank.errors import LaunchError


def test_everything_after_the_first_double_dash_is_the_scripts_verbatim() -> None:
    request = parse_argv(["launcher=mpich", "script=train.py", "--", "--lr", "3e-4", "--", "x=1", "-m"])
    assert (request.overrides, request.script) == (["launcher=mpich"], "train.py")  # a path never meets Hydra
    assert request.script_args == ["--lr", "3e-4", "--", "x=1", "-m"]


def test_first_token_that_is_neither_flag_nor_override_is_the_script() -> None:
    request = parse_argv(["bind.cores=0-3", "train.py", "--lr", "3e-4", "x=1", "--"])
    assert (request.script, request.script_args) == ("train.py", ["--lr", "3e-4", "x=1", "--"])


def test_deepspeed_launcher_helper_flags_mean_the_same_overrides() -> None:
    argv = [
        "--launcher",
        "MPICH",
        "--module",
        "--bind_cores_to_rank",
        "--bind_core_list",
        "1,3-5,7",
        "pkg.train",
        "--deepspeed",
        "--bind_core_list",
        "9",
    ]
    request = parse_argv(argv)
    assert request.overrides == ["launcher=mpich", "module=true", "bind.policy=cores", "bind.cores='1,3-5,7'"]
    assert request.script == "pkg.train"
    # As in DeepSpeed, flags after the script belong to the script.
    assert request.script_args == ["--deepspeed", "--bind_core_list", "9"]
    assert parse_argv(["--no_python", "--launcher=mpich", "a.sh"]).overrides == ["no_python=true", "launcher=mpich"]


def test_env_overrides_keep_their_value_byte_for_byte_and_tilde_unsets() -> None:
    request = parse_argv(["env.A=3e-4", "+env.B=a b=c", "++env.C=", "env.D=$(x)\n'\"", "~env.E"])
    assert request.env == {"A": "3e-4", "B": "a b=c", "C": "", "D": "$(x)\n'\"", "E": None}
    assert request.overrides == []


@pytest.mark.parametrize("token", ["env.=1", "env.1X=2", "env.A-B=3", "~env.a b"])
def test_bad_env_names(token: str) -> None:
    with pytest.raises(LaunchError, match="not a valid environment variable name"):
        parse_argv([token])


def test_cpu_lists_with_commas_are_quoted_for_hydra() -> None:
    assert parse_argv(["bind.cores=0,2,4"]).overrides == ["bind.cores='0,2,4'"]
    assert parse_argv(["bind.cores=[0-3,8-11]"]).overrides == ["bind.cores=[0-3,8-11]"]
    assert parse_argv(["args=[a,b]"]).overrides == ["args=[a,b]"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "a=1"], "multirun is not supported"),
        (["--multirun"], "multirun is not supported"),
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--launcher"], "--launcher needs a value"),
        (["--cfg", "hydra"], "expected --cfg job"),
    ],
)
def test_flag_errors(argv: list, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        parse_argv(argv)


def test_own_flags() -> None:
    request = parse_argv(["--cfg", "job", "--dry-run", "--debug", "-h"])
    assert (request.show_cfg, request.debug, request.help) == ("job", True, True)
    assert request.dry_run and request.overrides == []  # set on the config after composing, not an override
