"""A site adds a process manager with one YAML file in a $DS_HELPER_LAUNCHER_PATH folder, without touching the
installed package: here Horovod's horovodrun (tests/data/site/launcher/horovod.yaml), which ds-helper does not
ship, under the environment it gives its ranks (tests/data/site/horovod-gloo-2x2.json)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA, assert_user_error, clean_env, ds, load_recorded, plan_for
from ds_helper.rank.load import plan_from_json
from ds_helper.rank.plan import plan_to_json
from ds_helper.rank.resolve import resolve

SITE = DATA / "site"
HOROVOD = SITE / "horovod-gloo-2x2.json"
EXPORTED = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR"]


@pytest.fixture
def site_path(monkeypatch: pytest.MonkeyPatch) -> str:
    folders = f"{SITE / 'launcher'}"
    monkeypatch.setenv("DS_HELPER_LAUNCHER_PATH", folders)
    return folders


@pytest.mark.parametrize("launcher", ["auto", "horovod"])
def test_a_site_launcher_maps_its_recorded_environment(site_path: str, launcher: str) -> None:
    doc, ranks, reader = load_recorded(HOROVOD)
    plan = plan_for(f"launcher={launcher}")
    for env, expect in ranks:
        launch = resolve(plan, env, [], read_file=reader)
        assert launch.launcher == "horovod"
        assert {name: launch.env.get(name) for name in EXPORTED} == {name: expect.get(name) for name in EXPORTED}


def test_group_options_are_what_hydras_config_loader_lists(site_path: str) -> None:
    """compose.group_options asks the config sources itself (the loader's copy is slow): the same answer."""
    from ds_helper.compose.config import group_options, hydra_context
    from hydra.core.global_hydra import GlobalHydra

    with hydra_context():
        loader = GlobalHydra.instance().config_loader()
        for group in ("launcher", "bind", "hydra/job_logging"):
            assert group_options(group) == list(loader.get_group_options(group)), group
        assert "horovod" in group_options("launcher")  # a ConfigStore option, beside the packaged files


def test_auto_tries_a_site_launcher_by_its_priority_among_the_shipped_ones(site_path: str) -> None:
    launchers = plan_for().launchers
    names = [spec.name for spec in launchers]
    assert names.index("mpich") + 1 == names.index("horovod") == names.index("slurm") - 1  # priorities 65, 60, 50
    assert [spec.priority for spec in launchers] == sorted((spec.priority for spec in launchers), reverse=True)
    for path in sorted((DATA / "env").glob("*.json")):  # every shipped manager still wins its own environment
        doc, ranks, reader = load_recorded(path)
        assert resolve(plan_for(), ranks[0][0], [], read_file=reader).launcher == doc["expect_launcher"], path.name


def test_a_saved_plan_carries_the_site_launcher_to_ranks_without_the_path(
    site_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = plan_to_json(plan_for())
    monkeypatch.delenv("DS_HELPER_LAUNCHER_PATH")
    doc, ranks, reader = load_recorded(HOROVOD)
    assert resolve(plan_from_json(text), ranks[3][0], [], read_file=reader).env["RANK"] == "3"


def test_help_lists_a_site_launcher_and_an_unknown_name_lists_it_too(site_path: str) -> None:
    env = clean_env(DS_HELPER_LAUNCHER_PATH=site_path)
    assert "horovod      Horovod horovodrun (gloo controller)" in ds("--help", env=env).stdout
    message = assert_user_error(ds("launcher=nosuch", "show.py", env=env))
    assert "horovod" in message.partition("available: ")[2]


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


GOOD = "name: {name}\ndescription: {description}\ndetect: [OURS_RANK]\nrank: [OURS_RANK]\nlocal_rank: [OURS_LOCAL]\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("typo", "name: typo\ndescription: x\nrnak: [A]\n", "{path}:3: Key 'rnak' not in 'LauncherSpec'"),
        ("types", "name: types\npriority: high\n", "{path}:2: Value 'high' of type 'str' could not be converted"),
        ("named", "name: other\n", "{path}:1: name is 'other', expected 'named'"),
        ("tagged", "name: !!python/name:os.system x\n", "{path}:1: tag "),
        ("slurm", "name: slurm\n", "{path}: launcher=slurm ships with ds-helper; give the site's file another name"),
    ],
)
def test_a_bad_site_launcher_is_one_error_line_naming_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path / "site", name, text)
    result = ds("--dry-run", "show.py", env=clean_env(DS_HELPER_LAUNCHER_PATH=str(tmp_path / "site")))
    line = assert_user_error(result)
    assert line.removeprefix("ds-helper: error: ").startswith(message.format(path=path)), line


def test_an_earlier_folder_wins_as_on_path(tmp_path: Path) -> None:
    write(tmp_path / "first", "ours", GOOD.format(name="ours", description="from the first folder"))
    write(tmp_path / "second", "ours", GOOD.format(name="ours", description="from the second folder"))
    folders = f"{tmp_path / 'first'}:{tmp_path / 'second'}:{tmp_path / 'missing'}"
    result = ds("--help", env=clean_env(DS_HELPER_LAUNCHER_PATH=folders))
    assert "ours         from the first folder" in result.stdout, result.stderr


def test_launcher_equals_a_site_name_runs_the_script(tmp_path: Path) -> None:
    write(tmp_path / "site", "ours", GOOD.format(name="ours", description="ours"))
    env = clean_env(DS_HELPER_LAUNCHER_PATH=str(tmp_path / "site"), OURS_RANK="0", OURS_LOCAL="0")
    for launcher in ("ours", "auto"):
        result = ds(f"launcher={launcher}", "show.py", env=env)
        assert result.returncode == 0, result.stderr
        assert "ds-helper: rank 0 launcher=ours: " in result.stderr


def test_provenance_names_the_site_file(site_path: str) -> None:
    out = ds("--provenance", "launcher=horovod", "show.py", env=clean_env(DS_HELPER_LAUNCHER_PATH=site_path)).stdout
    assert f'launcher.name: "horovod"  # launcher option horovod ({SITE / "launcher" / "horovod.yaml"})' in out
