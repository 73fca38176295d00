"""The job side (job/): shape validation, start commands as data, and jobs ds-helper starts itself."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import (
    DATA,
    DS_HELPER,
    SCRIPTS,
    alive_with,
    assert_user_error,
    clean_env,
    ds,
    gone_after_kill_9,
    json_lines,
    start_watched,
    wait_for,
)
from ds_helper.compose.config import hydra_context, load_launchers
from ds_helper.compose.schema import JobSpec, LauncherSpec
from ds_helper.job.hostfile import parse_hostfile
from ds_helper.job.shape import Shape, job_shape
from ds_helper.job.start import start_command
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.load import plan_from_json
from ds_helper.rank.plan import PLAN_VAR, Plan, plan_to_json
from ds_helper.rank.resolve import resolve

with hydra_context():
    LAUNCHERS: Dict[str, LauncherSpec] = {spec.name: spec for spec in load_launchers()}


# --- shape -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "shape"),
    [
        (JobSpec(ranks=4), Shape(4, None, None, [])),
        (JobSpec(ranks=8, nodes=2), Shape(8, 2, 4, [])),
        (JobSpec(nodes=2, ranks_per_node=4), Shape(8, 2, 4, [])),
        (JobSpec(ranks=8, ranks_per_node=2), Shape(8, 4, 2, [])),
        (JobSpec(ranks=4, hosts=["a", "b"]), Shape(4, 2, 2, ["a", "b"])),
        (JobSpec(hosts=["a", "b", "c"], nodes=2, ranks_per_node=3), Shape(6, 2, 3, ["a", "b"])),
        (JobSpec(ranks=4, nodes=2, ranks_per_node=2), Shape(4, 2, 2, [])),
    ],
)
def test_a_consistent_subset_of_job_keys_gives_the_whole_shape(job: JobSpec, shape: Shape) -> None:
    assert job_shape(job) == shape


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (JobSpec(ranks=5, nodes=2), "job.ranks=5 over job.nodes=2: 5 ranks do not divide evenly"),
        (JobSpec(ranks=6, ranks_per_node=4), "job.ranks=6 with 4 ranks per node: 6 ranks do not divide evenly"),
        (JobSpec(ranks=4, nodes=2, ranks_per_node=4), "job.ranks=4 is not job.nodes=2 x 4 ranks per node"),
        (JobSpec(nodes=3, hosts=["a", "b"]), "job.nodes=3 but only 2 host(s): a, b"),
        (JobSpec(ranks=0), "job.ranks=0: must be a positive number"),
        (JobSpec(hosts=["a", "a"]), "job.hosts: host a is listed twice"),
        (JobSpec(hosts=["a b"]), "job.hosts: 'a b' is not a host name"),
        (JobSpec(hosts=["a"], hostfile="h"), "give job.hosts or job.hostfile, not both"),
    ],
)
def test_an_inconsistent_shape_is_one_error(job: JobSpec, message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        job_shape(job, read_file=lambda _: "x slots=1\n")
    assert message in str(caught.value)


def test_hostfile_slots_give_ranks_per_node_unless_job_ranks_per_node_says_otherwise() -> None:
    text = "# our nodes\nnode1 slots=4\n\nnode2 slots=4   # second\n"
    assert parse_hostfile(text, "h") == [("node1", 4), ("node2", 4)]
    assert job_shape(JobSpec(hostfile="h"), read_file=lambda _: text) == Shape(8, 2, 4, ["node1", "node2"])
    assert job_shape(JobSpec(hostfile="h", ranks=4), read_file=lambda _: text) == Shape(4, 1, 4, ["node1"])
    assert job_shape(JobSpec(hostfile="h", ranks_per_node=1), read_file=lambda _: text) == Shape(
        2, 2, 1, ["node1", "node2"]
    )
    uneven = "a slots=4\nb slots=2\n"
    with pytest.raises(LaunchError, match="slots differ \\(a slots=4, b slots=2\\); set job.ranks_per_node"):
        job_shape(JobSpec(hostfile="h"), read_file=lambda _: uneven)
    for bad, fragment in (
        ("a slots=x\n", "h:1: 'slots=x'"),
        ("a\na\n", "h:2: host a is listed twice"),
        ("#\n", "no hosts"),
    ):
        with pytest.raises(LaunchError, match=fragment):
            parse_hostfile(bad, "h")


# --- start commands, as each manager documents them -----------------------------------------------------------


def _command(name: str, job: JobSpec, binds: bool = False, env: Dict[str, str] | None = None) -> List[str]:
    argv = start_command(LAUNCHERS[name], job, job_shape(job), binds, env or {}, "{PLAN}")
    ds_part = argv.index(argv[-2] if argv[-2] != "-m" else argv[-3])
    return argv[:ds_part]  # without the rank's own command (this interpreter, ds-helper)


TWO_BY_TWO = JobSpec(ranks=4, hosts=["n1", "n2"])


@pytest.mark.parametrize(
    ("name", "job", "binds", "expected"),
    [
        # MPICH mpiexec.adoc; the command line DeepSpeed's MPICHRunner builds.
        (
            "mpich",
            TWO_BY_TWO,
            True,
            [
                "mpiexec.hydra",
                "-n",
                "4",
                "-ppn",
                "2",
                "-hosts",
                "n1,n2",
                "-bind-to",
                "none",
                "-print-all-exitcodes",  # read by the supervisor (mpich.yaml, exit_codes)
                "-genv",
                PLAN_VAR,
                "{PLAN}",
            ],
        ),
        # Intel MPI mpiexec.hydra, as DeepSpeed's IMPIRunner spells it (4.4): -ppn, -hosts, -genv I_MPI_PIN 0.
        (
            "impi",
            TWO_BY_TWO,
            True,
            [
                "mpiexec.hydra",
                "-n",
                "4",
                "-ppn",
                "2",
                "-hosts",
                "n1,n2",
                "-genv",
                "I_MPI_PIN",
                "0",
                "-print-all-exitcodes",
                "-genv",
                PLAN_VAR,
                "{PLAN}",
            ],
        ),
        # Open MPI mpirun -H host:slots, --map-by ppr:N:node, -x NAME (docs/launching-apps/scheduling.rst).
        (
            "openmpi",
            TWO_BY_TWO,
            True,
            ["mpirun", "-n", "4", "--map-by", "ppr:2:node", "-H", "n1:2,n2:2", "--bind-to", "none", "-x", PLAN_VAR],
        ),
        # MVAPICH2 user guide: mpirun_rsh -np 4 n1 n1 n2 n2 NAME=VALUE prog.
        ("mvapich", TWO_BY_TWO, False, ["mpirun_rsh", "-np", "4", "n1", "n1", "n2", "n2", f"{PLAN_VAR}={{PLAN}}"]),
        # srun(1): --disable-status, --ntasks, --nodes, --ntasks-per-node, --export=ALL,NAME.
        (
            "slurm",
            JobSpec(nodes=2, ranks_per_node=2),
            True,
            [
                "srun",
                "--disable-status",
                "--ntasks",
                "4",
                "--nodes",
                "2",
                "--ntasks-per-node",
                "2",
                "--cpu-bind=none",
                f"--export=ALL,{PLAN_VAR}",
            ],
        ),
        (
            "slurm",
            TWO_BY_TWO,
            False,
            [
                "srun",
                "--disable-status",
                "--ntasks",
                "4",
                "--ntasks-per-node",
                "2",
                "--nodelist",
                "n1,n2",
                f"--export=ALL,{PLAN_VAR}",
            ],
        ),
        # ALCF's PALS job scripts: mpiexec -n N --ppn P --hosts ... --env NAME=VALUE --cpu-bind none.
        (
            "pals",
            TWO_BY_TWO,
            True,
            [
                "mpiexec",
                "-n",
                "4",
                "--ppn",
                "2",
                "--hosts",
                "n1,n2",
                "--cpu-bind",
                "none",
                "--env",
                f"{PLAN_VAR}={{PLAN}}",
            ],
        ),
        # jsrun: one resource set per rank, --rs_per_host per node, -E NAME=VALUE.
        (
            "lsf",
            JobSpec(ranks=8, nodes=2),
            False,
            ["jsrun", "--tasks_per_rs", "1", "--nrs", "8", "--rs_per_host", "4", "-E", f"{PLAN_VAR}={{PLAN}}"],
        ),
        # flux run -n -N --tasks-per-node --env=NAME=VALUE (flux-core job-param, job-env-rules).
        (
            "flux",
            JobSpec(ranks=8, nodes=2),
            True,
            [
                "flux",
                "run",
                "-n",
                "8",
                "-N",
                "2",
                "--tasks-per-node=4",
                "-o",
                "cpu-affinity=off",
                f"--env={PLAN_VAR}={{PLAN}}",
            ],
        ),
    ],
)
def test_start_command_matches_the_managers_documented_command_line(
    name: str, job: JobSpec, binds: bool, expected: List[str]
) -> None:
    inside = {name: "1" for name in LAUNCHERS[name].start.allocation}  # jsrun runs inside an LSF job only
    assert _command(name, job, binds, inside) == expected


def test_program_override_and_manager_arguments_pass_through() -> None:
    job = JobSpec(ranks=2, program="mpiexec.mpich", manager_args=["-launcher", "fork", "-l"])
    assert _command("mpich", job)[:6] == ["mpiexec.mpich", "-launcher", "fork", "-l", "-n", "2"]


def test_every_launcher_says_how_it_starts_a_job_or_why_it_cannot() -> None:
    for name, spec in LAUNCHERS.items():
        if name in ("auto", "local"):
            assert spec.start.program is None and not spec.start.cannot  # ds-helper starts the ranks itself
        else:
            assert bool(spec.start.program) != bool(spec.start.cannot), name


@pytest.mark.parametrize(
    ("name", "job", "message"),
    [
        ("mpich", JobSpec(nodes=2, ranks_per_node=2), "a job on 2 nodes needs job.hosts or job.hostfile"),
        ("lsf", TWO_BY_TWO, "jsrun takes the hosts of the allocation; job.hosts cannot be given"),
        ("mvapich", JobSpec(nodes=2, ranks_per_node=1), "a job on 2 nodes needs job.hosts"),
        ("kubeflow", JobSpec(ranks=2), "launcher=kubeflow cannot start a job: the Kubeflow training operator"),
        ("torchrun", JobSpec(ranks=2), "launcher=torchrun cannot start a job: torchrun starts its own ranks"),
    ],
)
def test_a_start_the_manager_cannot_do_is_one_error(name: str, job: JobSpec, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        _command(name, job)


def test_kubeflow_says_in_one_line_that_it_cannot_start_jobs() -> None:
    assert_user_error(ds("launcher=kubeflow", "job.ranks=2", "show.py"), "launcher=kubeflow cannot start a job")


# --- the rank's side: layout facts from the plan, on recorded environments -----------------------------------


def _recorded(name: str) -> List[Dict[str, str]]:
    doc = json.loads((DATA / "env" / f"{name}.json").read_text())
    return [rank["env"] for rank in doc["ranks"]]


def _plan(launcher: str, **job: object) -> Plan:
    from ds_helper.compose.planner import make_plan
    from ds_helper.compose.schema import Config

    config = Config(launcher=LAUNCHERS[launcher], script=str(SCRIPTS / "show.py"))
    return plan_from_json(plan_to_json(Plan.from_data({**make_plan(config, []).to_data(), **job}, "plan")))


def _exports(plan: Plan, env: Dict[str, str]) -> Dict[str, str]:
    launch = resolve(plan, env, [])
    return {c.name: c.value for c in launch.changes if c.value is not None}


def test_mpich_on_two_nodes_gets_node_rank_master_addr_and_the_jobs_port_from_the_plan() -> None:
    envs = _recorded("mpich-hydra-pmi-port-2x2")
    plan = _plan("mpich", job_ranks=4, job_nodes=2, job_ranks_per_node=2, job_hosts=["n1", "n2"], job_port=31234)
    got = [_exports(plan, env) for env in envs]
    assert [(g["RANK"], g["LOCAL_RANK"], g["NODE_RANK"], g["MASTER_ADDR"], g["MASTER_PORT"]) for g in got] == [
        (str(r), str(r % 2), str(r // 2), "n1", "31234") for r in range(4)
    ]
    without = [_exports(_plan("mpich"), env) for env in envs]  # today, without the job side: unknown
    assert all("NODE_RANK" not in g and "MASTER_ADDR" not in g for g in without)


def test_master_addr_and_port_settings_still_win_over_the_jobs_choice() -> None:
    env = _recorded("mpich-hydra-pmi-port-2x2")[3]
    master = {**_plan("mpich").master.to_data(), "addr": "head", "port": 4242}
    plan = _plan("mpich", job_ranks_per_node=2, job_hosts=["n1", "n2"], job_port=31234, master=master)
    assert (_exports(plan, env)["MASTER_ADDR"], _exports(plan, env)["MASTER_PORT"]) == ("head", "4242")
    assert _exports(_plan("mpich", job_port=31234), {**env, "MASTER_PORT": "99"}).get("MASTER_PORT") is None


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"job_ranks": 8}, "job.ranks=8 but launcher=mpich started 4 ranks (PMI_SIZE=4)"),
        ({"job_ranks_per_node": 4}, "job.ranks_per_node=4 but launcher=mpich started 2 ranks on this node"),
        ({"job_nodes": 1}, "job.nodes=1 but launcher=mpich started 4 ranks with 2 on this node"),
    ],
)
def test_a_job_value_the_manager_contradicts_is_one_error_naming_both(job: Dict[str, int], message: str) -> None:
    env = _recorded("impi-mpirun-hydra-2x2")[0]  # Hydra's names: 4 ranks, 2 on each node
    with pytest.raises(LaunchError) as caught:
        resolve(_plan("mpich", **job), env, [])
    assert message in str(caught.value)


def test_a_rank_placed_round_robin_is_refused_naming_both_layouts() -> None:
    env = dict(_recorded("slurm-2node")[1])
    env.update(SLURM_PROCID="1", SLURM_LOCALID="0", SLURM_NODEID="1")  # srun -m cyclic: rank 1 first on node 1
    with pytest.raises(
        LaunchError,
        match="rank 1 is local rank 0 .* block layout of job.ranks_per_node=2 puts it at local rank 1 of node 0",
    ):
        resolve(_plan("slurm", job_ranks_per_node=2), env, [])


def test_the_plan_loader_refuses_a_damaged_job_field() -> None:
    text = plan_to_json(_plan("mpich", job_port=31234)).replace('"job_port":31234', '"job_port":-1')
    with pytest.raises(LaunchError, match="job_port: -1 is not a positive number"):
        plan_from_json(text)
    with pytest.raises(LaunchError, match="job_hosts"):
        plan_from_json(plan_to_json(_plan("mpich")).replace('"job_hosts":[]', '"job_hosts":"n1"'))


# --- jobs ds-helper starts itself (no manager) ---------------------------------------------------------------


@pytest.mark.parametrize("ranks", [2, 4])
def test_local_job_gives_every_rank_the_same_variables_as_a_manager_would(ranks: int) -> None:
    result = ds(f"job.ranks={ranks}", "show.py", "--lr", "3e-4", env=clean_env(SHOW_ALSO=PLAN_VAR))
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"], r["NODE_RANK"]) for r in rows] == [
        (str(i), str(i), str(ranks), str(ranks), "0") for i in range(ranks)
    ]
    assert {r["MASTER_ADDR"] for r in rows} == {"127.0.0.1"} and len({r["MASTER_PORT"] for r in rows}) == 1
    assert all(r["argv"] == ["--lr", "3e-4"] and r[PLAN_VAR] is None for r in rows)
    assert result.stderr.count("launcher=local:") == 1, result.stderr


def test_the_scripts_environment_carries_nothing_of_ds_helpers_own(tmp_path: Path) -> None:
    script = tmp_path / "names.py"
    script.write_text(
        "import os, json\nprint(json.dumps({'RANK': os.environ['RANK'], 'ours': sorted("
        "n for n in os.environ if n.startswith('DS_HELPER'))}))\n"
    )
    result = ds("launcher=local", "job.ranks=2", str(script))
    assert result.returncode == 0, result.stderr
    # The one documented for scripts: the attempt number (docs/jobs.md, job.restarts).
    assert [r["ours"] for r in json_lines(result.stdout)] == [["DS_HELPER_RESTART_COUNT"]] * 2


@pytest.mark.torch
def test_local_job_runs_a_torch_gloo_all_reduce_over_four_ranks() -> None:
    pytest.importorskip("torch", reason="torch==2.13.0 is installed by .ci/run")
    result = ds("job.ranks=4", "gloo_allreduce.py", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json_lines(result.stdout)
    assert [(r["rank"], r["world"], r["sum"], r["local_rank"]) for r in rows] == [(i, 4, 10.0, i) for i in range(4)]


@pytest.mark.parametrize(("fail", "code"), [({"FAIL_CODE": "5"}, 5), ({"FAIL_CODE": "0", "FAIL_SIGNAL": "KILL"}, 137)])
def test_a_failing_rank_stops_the_others_and_its_code_is_the_jobs(
    tmp_path: Path, fail: Dict[str, str], code: int
) -> None:
    env = clean_env(SIGNAL_DIR=str(tmp_path), FAIL_RANK="2", **fail)
    result = ds("job.ranks=4", "log.quiet=true", "one_fails.py", env=env, timeout=120)
    assert result.returncode == code, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "3"]  # each other rank got SIGTERM
    assert {p.read_text() for p in tmp_path.iterdir()} == {f"got signal {int(signal.SIGTERM)}\n"}


def test_sigterm_to_ds_helper_reaches_every_rank(tmp_path: Path) -> None:
    proc = start_watched(
        [DS_HELPER, "job.ranks=4", "log.quiet=true", "on_sigterm.py"], clean_env(SIGNAL_DIR=str(tmp_path))
    )
    wait_for(proc, "ready", 4)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 7  # the ranks' own exit code (their handler exits 7)
    assert [p.read_text() for p in tmp_path.iterdir()] == [f"got signal {int(signal.SIGTERM)}\n"] * 4


def test_a_rank_ignoring_sigterm_is_killed_after_log_grace() -> None:
    proc = start_watched([DS_HELPER, "job.ranks=2", "log.quiet=true", "log.grace=1", "stubborn.py"], clean_env())
    wait_for(proc, "ready", 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - started >= 0.9


def test_kill_9_of_ds_helper_leaves_no_rank_behind() -> None:
    token = f"ds-helper-test-{uuid.uuid4().hex}"
    proc = start_watched([DS_HELPER, "job.ranks=3", "log.quiet=true", "sleeper.py", token], clean_env())
    wait_for(proc, "ready", 3)
    assert len(alive_with(token)) == 4  # ds-helper and its 3 ranks
    assert gone_after_kill_9(proc, token) == []


@pytest.mark.torch
def test_two_jobs_started_together_both_succeed_on_different_ports() -> None:
    pytest.importorskip("torch", reason="torch==2.13.0 is installed by .ci/run")
    argv = [DS_HELPER, "job.ranks=2", "log.quiet=true", "gloo_allreduce.py"]
    jobs = [
        subprocess.Popen(
            [*argv],
            cwd=SCRIPTS,
            env=clean_env(SHOW_ALSO="MASTER_PORT"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert all([r["sum"] for r in json_lines(out)] == [3.0, 3.0] for out, _ in outputs)
    dry = [ds("job.ranks=2", "--dry-run", "show.py").stdout for _ in range(2)]
    ports = [line for text in dry for line in text.splitlines() if "MASTER_PORT" in line]
    assert len(ports) == 2 and ports[0] != ports[1]


def test_dry_run_shows_the_manager_command_and_the_layout_and_starts_nothing() -> None:
    result = ds(
        "launcher=mpich", "job.ranks=4", "job.hosts=[node1,node2]", "bind.policy=cores", "--dry-run", "show.py", "a"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    plan = re.search(r"plan written to (\S+);", out).group(1)  # type: ignore[union-attr]
    read = f'"$(cat {plan})"'
    manager = (
        f"mpiexec.hydra -n 4 -ppn 2 -hosts node1,node2 -bind-to none -print-all-exitcodes -genv {PLAN_VAR} {read} "
    )
    assert f"command: {PLAN_VAR}={read} {manager}" in out
    assert plan_from_json(Path(plan).read_text()).job_ranks == 4
    table = out[out.index("rank  node") :].splitlines()
    assert [line.split()[:4] for line in table[1:5]] == [
        ["0", "0", "node1", "0"],
        ["1", "0", "node1", "1"],
        ["2", "1", "node2", "0"],
        ["3", "1", "node2", "1"],
    ]
    assert '{"RANK"' not in out and "each rank runs:" in out and out.rstrip().endswith("show.py a")


def test_a_local_job_on_several_nodes_is_one_error() -> None:
    assert_user_error(ds("job.nodes=2", "job.ranks=4", "show.py"), "starts ranks on this machine only")


def test_every_job_and_start_key_has_one_line_of_help() -> None:
    from ds_helper.compose.schema import StartSpec, key_help

    for cls in (JobSpec, StartSpec):
        helps = key_help(cls)
        assert helps and all(text and "\n" not in text for text in helps.values()), (cls, helps)


def test_a_rank_of_a_started_job_loads_no_hydra_omegaconf_or_yaml(tmp_path: Path) -> None:
    script = tmp_path / "modules.py"
    script.write_text(
        "import json, os, sys\nprint(json.dumps({'RANK': os.environ['RANK'], 'top': sorted("
        "{m.split('.')[0] for m in sys.modules}), 'cli': 'ds_helper.cli' in sys.modules}))\n"
    )
    # run_mode=inprocess: the script runs in the rank's own ds-helper interpreter and sees what it imported.
    result = ds("job.ranks=2", "run_mode=inprocess", str(script))
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [r["RANK"] for r in rows] == ["0", "1"] and all(r["cli"] for r in rows)
    assert all(not {"hydra", "omegaconf", "yaml", "antlr4"} & set(r["top"]) for r in rows), rows


def test_a_recipe_carries_the_teams_job_shape(tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text("# @package _global_\ndescription: our nodes\njob:\n  ranks_per_node: 2\n")
    env = clean_env(DS_HELPER_RECIPE_PATH=str(tmp_path))
    shown = ds("recipe=team", "launcher=mpich", "job.nodes=2", "job.hosts=[a,b]", "--dry-run", "show.py", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "mpiexec.hydra -n 4 -ppn 2 -hosts a,b " in shown.stdout
    result = ds("recipe=team", "job.nodes=1", "show.py", env=env)  # 1 node x 2 ranks, started here
    assert [r["RANK"] for r in json_lines(result.stdout)] == ["0", "1"], result.stderr
