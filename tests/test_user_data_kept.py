"""Nothing of the user's is lost, overwritten or silently changed.

Each test stands for a class of mistakes (files ds-helper writes, per-rank logs, kill-with-parent, competing
managers, YAML typing in recipes, damaged plans, resolver escapes, port numbers), run through the installed
``ds-helper`` and, where a manager is involved, under real MPICH and Open MPI.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    DS_HELPER,
    assert_user_error,
    clean_env,
    ds,
    json_lines,
    load_recorded,
    mpich,
    openmpi,
    plan_for,
)


def _tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry of a folder: a file's bytes, or what else it is (a link's target, 'fifo', 'dir')."""
    found: dict[str, bytes | str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            found[entry.name] = f"-> {os.readlink(entry)}"
        elif entry.is_fifo():
            found[entry.name] = "fifo"
        elif entry.is_char_device():
            found[entry.name] = f"char device {os.stat(entry).st_rdev}"
        elif entry.is_dir():
            found[entry.name] = "dir"
        else:
            found[entry.name] = entry.read_bytes()
    return found


# --- 1. files ds-helper writes never replace what is not theirs -------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "the script",
        "a text file",
        "a fifo",
        "a folder",
        "a device",
        "a dangling link",
        "a link to the script",
        "JSON that is not a plan",
    ],
)
def test_save_plan_never_replaces_what_is_not_a_plan(work: Path, kind: str) -> None:
    target = {"the script": "show.py", "a link to the script": "link.json"}.get(kind, "target")
    if kind == "a text file":
        (work / "target").write_text("notes\n")
    elif kind == "a fifo":
        os.mkfifo(work / "target")
    elif kind == "a folder":
        (work / "target").mkdir()
    elif kind == "a device":  # our own node for /dev/null: old code replaced the device it was given
        try:
            os.mknod(work / "target", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root")
    elif kind == "a dangling link":
        (work / "target").symlink_to(work / "elsewhere.json")
    elif kind == "a link to the script":
        (work / "link.json").symlink_to(work / "show.py")
    elif kind == "JSON that is not a plan":
        (work / "target").write_text('{"format": 1, "plan": {}, "mine": true}\n')
    before = _tree(work)
    result = ds("--save-plan", target, "show.py", cwd=work, timeout=30)
    assert_user_error(result, "--save-plan")
    assert _tree(work) == before


def test_save_plan_writes_new_files_and_replaces_earlier_plans_even_of_another_format(work: Path) -> None:
    assert ds("--save-plan", "p.json", "show.py", cwd=work).returncode == 0
    first = json.loads((work / "p.json").read_text())
    (work / "p.json").write_text(json.dumps({"format": 0, "plan": {"old": True}}))  # an older ds-helper's plan
    (work / "link.json").symlink_to("p.json")
    assert ds("--save-plan", "link.json", "show.py", "x", cwd=work).returncode == 0
    assert (work / "link.json").is_symlink()  # the link still points at the plan, which was rewritten
    assert json.loads((work / "p.json").read_text())["plan"]["args"] == ["x"]
    assert first["plan"]["args"] == []
    assert sorted(p.name for p in work.iterdir()) == ["link.json", "p.json", "show.py"]  # no temporary left


# --- 9. a saved plan is checked as strictly as a composed config -------------------------------------------------


def _saved(work: Path, *overrides: str) -> dict:
    assert ds(*overrides, "--save-plan", "p.json", "show.py", cwd=work).returncode == 0
    return json.loads((work / "p.json").read_text())


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("log", "out"), "../../escape-{rank}", "a file name inside log.dir"),
        (("log", "err"), "{rank.__class__.__init__.__globals__}", "bad placeholder"),
        (("log", "err"), "rank-{rank}.out", "stdout and stderr would overwrite each other"),
        (("log", "dir"), "logs/{rank}", "placeholders are not expanded in log.dir"),
        (("env",), {"A=B": "x"}, "is not a variable name"),
        (("env",), {"A": "x\u0000y"}, "NUL"),
        (("export", "rank"), ["RANK", ""], "is not a variable name"),
        (("master", "port"), 99999, "a port is a number from 1 to 65535"),
        (("master", "port_span"), 60000, "ports from the job id must stay within"),
        (("master", "default_port"), 0, "a port is a number from 1 to 65535"),
        (("launchers", 0, "fixed"), {"rank": -1}, "not a rank number"),
        (("launchers", 0, "fixed"), {"colour": 1}, "not one of rank"),
        (("args",), ["a\u0000b"], "NUL"),
    ],
)
def test_a_damaged_plan_is_refused_like_a_bad_config(work: Path, path: tuple, value: object, fragment: str) -> None:
    data = _saved(work, "log.dir=logs")
    node = data["plan"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    (work / "p.json").write_text(json.dumps(data))
    assert_user_error(ds("--plan", "p.json", cwd=work), "--plan p.json", fragment)
    assert not (work / "logs").exists() and not (work / "escape-0").exists()


@pytest.mark.parametrize("content", ["deep", "zero", "huge"])
def test_a_huge_or_deeply_nested_plan_is_one_line_fast(work: Path, content: str) -> None:
    path = work / "p.json"
    if content == "deep":
        path.write_text("[" * 100_000)
    elif content == "huge":
        path.write_text('{"format": 1, "plan": {"args": ["' + "x" * (20 << 20) + '"]}}')
    else:
        path = Path("/dev/zero")
    started = time.monotonic()
    result = run_limited([DS_HELPER, "--plan", str(path)], cwd=work)
    assert_user_error(result, "not a ds-helper plan")
    assert time.monotonic() - started < 30


def run_limited(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run with a 512 MB address-space limit: a reader that slurps /dev/zero dies instead of passing."""
    code = (
        "import resource, sys, os; resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20)); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# --- 11. numbers are checked ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["master.port=99999"], "master.port=99999: a port is a number from 1 to 65535"),
        (["master.port=0"], "master.port=0: a port"),
        (["master.port_base=60000"], "master.port_span=10000 with master.port_base=60000"),
        (["master.port_span=0"], "master.port_span=0"),
        (["master.default_port=70000"], "master.default_port=70000"),
        (["log.grace=nan"], "log.grace=nan: must be a finite number of seconds"),
    ],
)
def test_ports_out_of_range_are_one_line(work: Path, overrides: list[str], fragment: str) -> None:
    assert_user_error(ds(*overrides, "show.py", cwd=work), fragment)
    assert_user_error(ds(*overrides, "--save-plan", "p.json", "show.py", cwd=work), fragment)
    assert not (work / "p.json").exists()


@pytest.mark.parametrize(
    "job", ["\u0661\u0662\u0663", "\u00b2", "\uff11\uff12"]
)  # Arabic-Indic, superscript, full width
def test_a_job_id_of_non_ascii_digits_is_one_line(work: Path, job: str) -> None:
    env = clean_env(SLURM_STEP_ID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NTASKS="1", SLURM_JOB_ID=job)
    assert_user_error(ds("show.py", cwd=work, env=env), "SLURM_JOB_ID=", "ASCII digits")


def test_an_inherited_master_port_out_of_range_is_one_line(work: Path) -> None:
    assert_user_error(ds("show.py", cwd=work, env=clean_env(MASTER_PORT="99999")), "MASTER_PORT='99999'")


def test_open_mpi_job_id_gives_the_port_like_slurm(work: Path) -> None:
    env = clean_env(SHOW_ALSO="OMPI_MCA_ess_base_jobid")
    result = openmpi(2, DS_HELPER, "show.py", cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    job = int(rows[0]["OMPI_MCA_ess_base_jobid"])
    assert [row["MASTER_PORT"] for row in rows] == [str(20000 + job % 10000)] * 2
    again = json_lines(openmpi(2, DS_HELPER, "show.py", cwd=work, env=env).stdout)
    assert int(again[0]["OMPI_MCA_ess_base_jobid"]) != job  # each mpirun is a job of its own


# --- 2. per-rank log files never overwrite each other ------------------------------------------------------------


@pytest.mark.parametrize("launch", [mpich, openmpi])
def test_log_names_without_a_rank_are_refused_on_every_rank_of_a_job(work: Path, launch) -> None:
    result = launch(2, DS_HELPER, "log.dir=logs", "log.out=out.txt", "log.err='err-{rank}.txt'", "show.py", cwd=work)
    assert_user_error(result, "log.out='out.txt': every rank of this job would write the same file")
    assert result.stderr.count("ds-helper: error:") == 2
    assert not (work / "logs").exists()


def test_a_standalone_run_may_name_its_log_without_a_rank(work: Path) -> None:
    assert ds("log.dir=logs", "log.out=train.out", "log.err=train.err", "show.py", cwd=work).returncode == 0
    assert json.loads((work / "logs" / "train.out").read_text())["RANK"] == "0"


def test_node_rank_alone_is_refused_where_the_manager_gives_none(work: Path) -> None:
    # Rank 1 of an Open MPI job over two nodes (two nodes cannot exist here): Open MPI gives no node index.
    env = clean_env(
        OMPI_COMM_WORLD_RANK="1",
        OMPI_COMM_WORLD_SIZE="4",
        OMPI_COMM_WORLD_LOCAL_RANK="1",
        OMPI_COMM_WORLD_LOCAL_SIZE="2",
    )
    result = ds("log.dir=logs", "log.out='o{node_rank}.{local_rank}'", "show.py", cwd=work, env=env)
    assert_user_error(result, "gives no node rank")
    assert not (work / "logs").exists()


@pytest.mark.parametrize(
    "overrides",
    [["log.out='same-{rank}'", "log.err='same-{rank}'"], ["log.dir='logs/{rank}'"], ["log.dir='logs-{node_rank}'"]],
)
def test_streams_sharing_a_file_or_placeholders_in_log_dir_are_refused(work: Path, overrides: list[str]) -> None:
    before = _tree(work)
    args = overrides if any(o.startswith("log.dir") for o in overrides) else ["log.dir=logs", *overrides]
    assert_user_error(
        mpich(2, DS_HELPER, *args, "show.py", cwd=work),
        "log.",
        "would overwrite each other" if len(args) > 1 else "not expanded",
    )
    assert_user_error(
        ds(*args, "--save-plan", "p.json", "show.py", cwd=work),
        "log.",
        "would overwrite each other" if len(args) > 1 else "not expanded",
    )
    assert _tree(work) == before


@pytest.mark.parametrize("tee", ["false", "true"])
def test_existing_logs_are_never_truncated_and_two_jobs_never_share_files(work: Path, tee: str) -> None:
    first = mpich(2, DS_HELPER, "log.dir=logs", f"log.tee={tee}", "show.py", cwd=work)
    assert first.returncode == 0, first.stderr
    logs = _tree(work / "logs")
    assert sorted(logs) == ["rank-0.err", "rank-0.out", "rank-1.err", "rank-1.out"] and logs["rank-1.out"]
    second = mpich(2, DS_HELPER, "log.dir=logs", f"log.tee={tee}", "show.py", cwd=work)
    assert_user_error(second, "log file logs/rank-", "exists: ds-helper never overwrites a log")
    assert _tree(work / "logs") == logs
    (work / "mine").mkdir()
    (work / "mine" / "rank-0.err").write_text("precious\n")
    assert_user_error(ds("log.dir=mine", f"log.tee={tee}", "show.py", cwd=work), "mine/rank-0.err exists")
    assert _tree(work / "mine") == {"rank-0.err": b"precious\n"}  # and rank-0.out, created first, removed again


# --- 3. a standalone run outlives its parent like python would ----------------------------------------------------

OUTLIVE = """
import os, time
parent = os.getppid()
open("started", "w").close()
deadline = time.monotonic() + 60
while os.getppid() == parent and time.monotonic() < deadline:
    time.sleep(0.05)
open("survived.tmp", "w").write(str(os.getppid() != parent))
os.rename("survived.tmp", "survived")
"""

# A parent like `nohup ds-helper outlive.py &` in a shell that then exits: start the command, wait until the
# script runs, and end.
PARENT = """
import os, subprocess, sys, time
subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 60
while not os.path.exists("started") and time.monotonic() < deadline:
    time.sleep(0.02)
os._exit(0)
"""


@pytest.mark.parametrize("overrides", [[], ["launcher=local"], ["no_python=true", sys.executable]])
def test_a_standalone_run_outlives_the_parent_that_started_it(work: Path, overrides: list[str]) -> None:
    (work / "outlive.py").write_text(OUTLIVE)
    command = [DS_HELPER, *overrides, "outlive.py"]
    parent = subprocess.run([sys.executable, "-c", PARENT, *command], cwd=work, env=clean_env(), timeout=90)
    assert parent.returncode == 0 and (work / "started").exists()
    deadline = time.monotonic() + 60
    while not (work / "survived").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (work / "survived").read_text() == "True"  # the parent is gone and the script ran on


# --- 4. variables of an outer manager never beat the manager that started this rank --------------------------------

POD = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "10.1.2.3", "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
STRAY_TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "old-job",
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "1",
    "LOCAL_WORLD_SIZE": "1",
}


@pytest.mark.parametrize("launch", [mpich, openmpi])
@pytest.mark.parametrize(
    ("leftovers", "outer"), [(POD, "kubeflow"), (STRAY_TORCHRUN, "torchrun")], ids=["pod", "torchrun"]
)
def test_a_stale_managers_variables_are_one_error_naming_both(work: Path, launch, leftovers: dict, outer: str) -> None:
    result = launch(2, DS_HELPER, "show.py", cwd=work, env=clean_env(**leftovers))
    inner = "mpich" if launch is mpich else "openmpi"
    message = assert_user_error(result, "disagree", outer, inner)
    assert result.stderr.count("ds-helper: error:") == 2, result.stderr  # every rank refuses, none starts
    assert "launcher=NAME" in message


@pytest.mark.parametrize("launch", [mpich, openmpi])
def test_the_manager_chosen_by_name_wins_over_leftovers(work: Path, launch) -> None:
    name = "mpich" if launch is mpich else "openmpi"
    result = launch(2, DS_HELPER, f"launcher={name}", "show.py", cwd=work, env=clean_env(**POD))
    assert result.returncode == 0, result.stderr
    assert [(row["RANK"], row["WORLD_SIZE"]) for row in json_lines(result.stdout)] == [("0", "2"), ("1", "2")]


def test_managers_that_agree_are_fine(work: Path) -> None:
    # One rank of mpiexec -n 1 in a pod whose leftovers say the same thing: nothing contradicts.
    result = mpich(1, DS_HELPER, "show.py", cwd=work, env=clean_env(**POD))
    assert result.returncode == 0, result.stderr


def _recorded_rank(name: str, index: int) -> dict[str, str]:
    _doc, ranks, _reader = load_recorded(Path(__file__).parent / "data" / "env" / f"{name}.json")
    return dict(ranks[index][0])


def test_a_declared_nesting_is_fine_and_a_stray_one_is_not() -> None:
    from ds_helper.rank.errors import LaunchError
    from ds_helper.rank.resolve import resolve

    plan = plan_for()
    # torchrun's worker 3 of 4, its torchrun started by srun as task 1 of 2 (torchrun.yaml: inside slurm).
    nested = {
        **_recorded_rank("torchrun-2x2", 3),
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
    }
    launch = resolve(plan, nested, [], read_machine=lambda: pytest.fail("no binding asked for"))
    assert (launch.launcher, launch.ranks["rank"]) == ("torchrun", 3)
    # The same leftovers as a stray torchrun in rank 1 of a 2-task srun step: torchrun's world (1) is smaller.
    stray = {**_recorded_rank("slurm-2node", 1), **STRAY_TORCHRUN}
    with pytest.raises(LaunchError, match="torchrun says .* slurm says"):
        resolve(plan, stray, [])


# --- 6. values in recipes reach the script as written ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("env: {N: no}", "env.N: no would reach the script as 'False'"),
        ("env: {O: 0755}", "env.O: 0755 would reach the script as '493'"),
        ("env: {T: 12:30}", "env.T: 12:30 would reach the script as '750'"),
        ("env: {D: 2024-01-01}", "env.D: 2024-01-01 would reach the script as"),
        ("env: {F: 1.50}", "env.F: 1.50 would reach the script as '1.5'"),
        ("env: {H: 0x1F}", "env.H: 0x1F would reach the script as '31'"),
        ("env: {0755: x}", "env name 0755"),
        ("args: [--flag, yes]", "args: yes would reach the script as 'True'"),
        ("args: [--lr, 3e-4]", "args: 3e-4 would reach the script as '0.0003'"),
        ("args: [--n, 1_000]", "args: 1_000 would reach the script as '1000'"),
        ("args: [--x, null]", "args: null where a string belongs"),
        ("script: 0755", "script: 0755 would reach the script as '493'"),
        ("env: {A: {B: 1}}", "env.A: a mapping where a string belongs"),
        ("env: {A: [1]}", "env.A: a list where a string belongs"),
        ("args: [--x, {a: 1}]", "args: a mapping where a string belongs"),
        ("args: [[1, 2]]", "args: a list where a string belongs"),
        ("env: [A, B]", "env: must be a mapping"),
        ("args: --x", "args: must be a list"),
    ],
)
def test_recipe_values_yaml_would_retype_are_errors_at_check_and_launch(work: Path, line: str, fragment: str) -> None:
    (work / "typed.yaml").write_text(f"# a team recipe\n{line}\n")
    checked = ds("--check", "typed.yaml", cwd=work)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert f"typed.yaml:2: {fragment}" in checked.stderr, checked.stderr
    assert_user_error(ds("recipe=./typed.yaml", "show.py", cwd=work), "typed.yaml:2:", fragment)


def test_recipe_values_as_written_pass_unchanged(work: Path) -> None:
    (work / "plain.yaml").write_text(
        "env: {N: 'no', O: '0755', T: \"12:30\", THREADS: 4, RATIO: 0.5, NAME: resnet, GONE: null}\n"
        "args: [--flag, 'yes', --lr, '3e-4', --epochs, 10, --tag, v1.2]\n"
    )
    assert ds("--check", "plain.yaml", cwd=work).returncode == 0
    env = clean_env(GONE="here", SHOW_ALSO="N,O,T,THREADS,RATIO,NAME,GONE")
    result = ds("recipe=./plain.yaml", "show.py", cwd=work, env=env)
    row = json_lines(result.stdout)[0]
    assert {k: row[k] for k in ("N", "O", "T", "THREADS", "RATIO", "NAME", "GONE")} == {
        "N": "no",
        "O": "0755",
        "T": "12:30",
        "THREADS": "4",
        "RATIO": "0.5",
        "NAME": "resnet",
        "GONE": None,
    }
    assert row["argv"] == ["--flag", "yes", "--lr", "3e-4", "--epochs", "10", "--tag", "v1.2"]


@pytest.mark.parametrize("override", ["args=[a,[b]]", "args=[a,{b:1}]"])
def test_a_container_where_an_argument_belongs_on_the_command_line_is_one_line(work: Path, override: str) -> None:
    assert_user_error(ds(override, "show.py", cwd=work), "args:", "where a string belongs")


# --- 10. no resolver escape ----------------------------------------------------------------------------------------

EVIL = {"EVIL": "${now:%H%M%S}", "HIDDEN": "${hydra:runtime.cwd}", "SHOW_ALSO": "A"}


@pytest.mark.parametrize(
    "value",
    [
        "${oc.decode:${oc.env:EVIL}}",
        "${oc.decode:${oc.env:HIDDEN}}",
        "${oc.decode:'${oc.env:EVIL}'}",
        "x-${oc.decode:${oc.select:env.B}}",
    ],
)
def test_refused_resolvers_are_unreachable_through_decode(work: Path, value: str) -> None:
    (work / "escape.yaml").write_text(json.dumps({"env": {"A": value, "B": "${oc.env:EVIL}"}}) + "\n")
    env = clean_env(**EVIL)
    checked = ds("--check", "escape.yaml", cwd=work, env=env)
    assert checked.returncode == 2 and "refused" in checked.stderr and "Traceback" not in checked.stderr
    assert_user_error(ds("recipe=./escape.yaml", "show.py", cwd=work, env=env), "refused")


def test_refused_resolvers_are_unreachable_from_the_command_line_too(work: Path) -> None:
    override = "log.prefix='${oc.decode:${oc.env:EVIL}}'"
    assert_user_error(ds(override, "show.py", cwd=work, env=clean_env(**EVIL)), "resolver 'now' refused")


def test_text_a_resolver_returns_is_never_resolved_again(work: Path) -> None:
    (work / "text.yaml").write_text('env: {A: "${oc.env:EVIL}"}\n')
    result = ds("recipe=./text.yaml", "show.py", cwd=work, env=clean_env(**EVIL))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["A"] == "${now:%H%M%S}"  # the variable's text, as `oc.env` returned it
