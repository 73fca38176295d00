"""The job side: start a whole job from one command (docs/jobs.md).

``ds-helper launcher=NAME job.ranks=N train.py`` composes once, here, then either ``exec``s the manager's own start
command (declared as data in the launcher's YAML ``start`` block) or, with no manager (launcher=auto/local), starts
the N ranks itself and supervises them. Either way every rank gets the composed plan in one environment variable,
``DS_HELPER_PLAN``, and takes the standard-library path of ``cli.run_env_plan``: Hydra is imported once per job.

The shape (ranks, nodes, ranks per node, hosts) is validated here, once; each rank checks that the manager placed
it as asked (``resolve.apply_job_layout``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Tuple

from ds_helper.compose.schema import JobSpec
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.inherit import death_signal_setter
from ds_helper.rank.plan import PLAN_VAR, LauncherSpec, Plan, plan_to_json

ReadFile = Callable[[str], str]


@dataclass
class Shape:
    """The job as asked: None where the user left a number to the manager (or the allocation)."""

    ranks: Optional[int] = None
    nodes: Optional[int] = None
    ranks_per_node: Optional[int] = None
    hosts: List[str] = field(default_factory=list)


# --- shape ---------------------------------------------------------------------------------------------------


def parse_hostfile(text: str, where: str) -> List[Tuple[str, Optional[int]]]:
    """``host [slots=N]`` a line, ``#`` comments, blank lines ignored (DeepSpeed's and Open MPI's format)."""
    entries: List[Tuple[str, Optional[int]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        host, slots = words[0], None
        for word in words[1:]:
            key, equals, value = word.partition("=")
            if key != "slots" or not equals or not value.isdigit() or int(value) < 1:
                raise LaunchError(f"{where}:{number}: {word!r}: expected slots=N (N >= 1) after the host name")
            slots = int(value)
        if any(host == seen for seen, _ in entries):
            raise LaunchError(f"{where}:{number}: host {host} is listed twice")
        entries.append((host, slots))
    if not entries:
        raise LaunchError(f"{where}: no hosts in the file")
    return entries


def read_hostfile(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(1 << 20)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LaunchError(f"job.hostfile={path}: cannot read it ({reason})") from None


def declared(job: JobSpec) -> bool:
    """The user asked for a job shape (any job.* key of the shape)."""
    return any(v is not None for v in (job.ranks, job.nodes, job.ranks_per_node, job.hostfile)) or bool(job.hosts)


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise LaunchError(f"job.{name}={value}: must be a positive number")


def _divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise LaunchError(f"{what}: {total} ranks do not divide evenly ({total} / {parts} is not a whole number)")
    return total // parts


def job_shape(job: JobSpec, read_file: ReadFile = read_hostfile) -> Shape:
    """The consistent shape of ``job.*``, every number derivable from the others filled in, or one error."""
    for name in ("ranks", "nodes", "ranks_per_node"):
        _positive(name, getattr(job, name))
    if job.hosts and job.hostfile:
        raise LaunchError("give job.hosts or job.hostfile, not both")
    hosts = [str(h) for h in job.hosts]
    if any(not h or h.startswith("-") or any(c.isspace() or c == "," for c in h) for h in hosts):
        raise LaunchError(f"job.hosts={hosts}: host names without spaces or commas, not starting with '-'")
    if len(set(hosts)) != len(hosts):
        raise LaunchError(f"job.hosts={hosts}: a host is listed twice")
    slots: Optional[int] = None
    if job.hostfile:
        entries = parse_hostfile(read_file(job.hostfile), f"job.hostfile={job.hostfile}")
        hosts = [host for host, _ in entries]
        counts = sorted({n for _, n in entries if n is not None})
        if len(counts) > 1 and job.ranks_per_node is None:
            listed = ", ".join(f"{h} slots={n}" for h, n in entries if n is not None)
            raise LaunchError(f"job.hostfile={job.hostfile}: slots differ ({listed}); set job.ranks_per_node")
        slots = counts[0] if len(counts) == 1 else None
    ranks, nodes = job.ranks, job.nodes
    per_node = job.ranks_per_node if job.ranks_per_node is not None else slots
    if nodes is None and ranks is not None and per_node is not None:
        nodes = _divide(ranks, per_node, f"job.ranks={ranks} with {per_node} ranks per node")
    if nodes is None and hosts:
        nodes = len(hosts)
    if per_node is None and ranks is not None and nodes is not None:
        per_node = _divide(ranks, nodes, f"job.ranks={ranks} over job.nodes={nodes}")
    if ranks is None and nodes is not None and per_node is not None:
        ranks = nodes * per_node
    if None not in (ranks, nodes, per_node) and ranks != nodes * per_node:  # type: ignore[operator]
        raise LaunchError(f"job.ranks={ranks} is not job.nodes={nodes} x {per_node} ranks per node")
    if hosts and nodes is not None:
        if nodes > len(hosts):
            raise LaunchError(f"job.nodes={nodes} but only {len(hosts)} host(s): {', '.join(hosts)}")
        hosts = hosts[:nodes]
    return Shape(ranks, nodes, per_node, hosts)


# --- the plan every rank gets ---------------------------------------------------------------------------------


def _changed(plan: Plan, **values: object) -> Plan:
    """A copy of the plan with some fields changed, checked like any plan."""
    changed: Plan = Plan.from_data({**plan.to_data(), **values}, "plan")
    return changed


def with_layout(plan: Plan, shape: Shape) -> Plan:
    """The plan with the job's layout, as the ranks will check it (``resolve.apply_job_layout``)."""
    return _changed(
        plan,
        job_ranks=shape.ranks,
        job_nodes=shape.nodes,
        job_ranks_per_node=shape.ranks_per_node,
        job_hosts=list(shape.hosts),
    )


def rank_plan(plan: Plan, spec: LauncherSpec, shape: Shape, port: Optional[int], args: List[str]) -> Plan:
    """What each rank of a job started here runs: one manager, this job's layout and port, no dry run."""
    ranked = with_layout(plan, shape)
    return _changed(
        ranked,
        launchers=[spec],
        auto=False,
        fallback=None,
        evidence=[],
        args=[*plan.args, *args],
        dry_run=False,
        job_port=port,
    )


def free_port() -> int:
    """A TCP port free on this machine now. The kernel hands out a different one to each caller that asks at the
    same time, so two jobs started together from one machine do not share one (tests/test_job.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def rank_command() -> List[str]:
    """How a rank starts ds-helper: this interpreter and the same entry point (the console script if used)."""
    entry = os.path.abspath(sys.argv[0])
    if os.path.basename(entry) == "ds-helper" and os.path.isfile(entry):
        return [sys.executable, entry]
    return [sys.executable, "-m", "ds_helper.cli"]


# --- is this a job start? -------------------------------------------------------------------------------------


def _has_rank_variables(spec: LauncherSpec, env: Mapping[str, str]) -> bool:
    """The manager started this process: its signature (or, without one, a rank variable) is present."""
    from ds_helper.rank.resolve import signature_present

    if spec.detect:
        return signature_present(spec, env)
    return any(source.split("[", 1)[0] in env for source in spec.rank)


def starting_spec(plan: Plan, job: JobSpec, env: Mapping[str, str]) -> Optional[LauncherSpec]:
    """The manager whose start command this process should run, or None when it is a rank (today's path)."""
    if plan.auto:
        if plan.fallback is None or not declared(job):
            return None
        from ds_helper.rank.resolve import choose_launcher

        spec, _ = choose_launcher(plan, env)
        return spec if spec is plan.fallback else None  # a recognised manager started this rank
    spec = plan.launchers[0]
    if _has_rank_variables(spec, env):
        return None
    in_allocation = any(name in env for name in spec.start.allocation)
    return spec if declared(job) or (in_allocation and spec.start.program) else None


# --- the manager's start command ------------------------------------------------------------------------------


def _fill(template: List[str], **values: object) -> List[str]:
    try:
        return [part.format(**values) for part in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise LaunchError(f"launcher start template {template}: bad placeholder {exc}") from None


def _host_args(spec: LauncherSpec, shape: Shape) -> List[str]:
    start = spec.start
    hosts = shape.hosts
    if not hosts and start.needs_hosts:  # one node (_shape_args refuses several nodes without hosts)
        hosts = ["localhost"]
    if not hosts:
        return []
    if not start.hosts:
        raise LaunchError(
            f"launcher={spec.name}: {start.program} takes the hosts of the allocation; job.hosts cannot be given"
        )
    per_node = shape.ranks_per_node or 1
    forms = [_fill([start.host_form], host=h, ranks_per_node=per_node)[0] for h in hosts]
    if start.host_per_rank:
        forms = [form for form in forms for _ in range(per_node)]
    if start.host_join is None:
        return [arg for part in start.hosts for arg in (forms if part == "{hosts}" else [part])]
    return _fill(start.hosts, hosts=start.host_join.join(forms))


def _shape_args(spec: LauncherSpec, shape: Shape, in_allocation: bool) -> List[str]:
    start = spec.start
    args: List[str] = []
    # Ask for each number the manager has an option for; a number it cannot take must follow from the others.
    if shape.ranks is not None:
        if not start.ranks:
            raise LaunchError(f"launcher={spec.name}: {start.program} has no option for a number of ranks")
        args += _fill(start.ranks, ranks=shape.ranks)
    if shape.nodes is not None and start.nodes and not shape.hosts:
        args += _fill(start.nodes, nodes=shape.nodes)
    elif (shape.nodes or 1) > 1 and not shape.hosts and not start.nodes and not in_allocation:
        raise LaunchError(
            f"launcher={spec.name}: a job on {shape.nodes} nodes needs job.hosts or job.hostfile "
            f"({start.program} cannot pick nodes by itself outside an allocation)"
        )
    if shape.ranks_per_node is not None and start.ranks_per_node:
        args += _fill(start.ranks_per_node, ranks_per_node=shape.ranks_per_node)
    elif shape.ranks_per_node is not None and not start.host_per_rank and "{ranks_per_node}" not in start.host_form:
        if (shape.nodes or 1) > 1:
            raise LaunchError(f"launcher={spec.name}: {start.program} has no option for ranks per node")
    return args + _host_args(spec, shape)


def start_command(
    spec: LauncherSpec, job: JobSpec, shape: Shape, binds: bool, env: Mapping[str, str], plan_json: str
) -> List[str]:
    """The manager's command line that starts every rank as ``ds-helper`` with the plan in ``PLAN_VAR``."""
    start = spec.start
    if not start.program:
        raise LaunchError(f"launcher={spec.name} cannot start a job: {start.cannot or 'no start block'}")
    program = job.program or start.program
    in_allocation = any(name in env for name in start.allocation)
    argv = [program, *start.args, *[str(a) for a in job.manager_args], *_shape_args(spec, shape, in_allocation)]
    if binds:
        argv += start.no_bind
    argv += _fill(start.env, name=PLAN_VAR, value=plan_json)
    return argv + rank_command()


# --- local ranks: no manager at all ---------------------------------------------------------------------------


def local_rank_env(spec: LauncherSpec, rank: int, size: int) -> Dict[str, str]:
    """The variables a rank started here gets: the first source name of each number in the local launcher."""
    numbers = {"rank": rank, "local_rank": rank, "world_size": size, "local_world_size": size}
    env: Dict[str, str] = {}
    for name, value in numbers.items():
        sources = getattr(spec, name)
        if not sources:
            raise LaunchError(f"launcher={spec.name}: no variable for {name} to start local ranks with")
        env[sources[0]] = str(value)
    return env


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _child_setup(parent: int) -> Callable[[], None]:
    """Run in each rank between fork and exec, so no moment of the rank outlives ds-helper."""
    die_with = death_signal_setter()  # made here: the forked child only calls it

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the starter blocks these to wait for them; ranks do not
        if not die_with(parent):  # gone with ds-helper, even by kill -9; ds-helper died before this took effect
            os._exit(128 + signal.SIGKILL)

    return setup


def run_local(command: List[str], envs: List[Dict[str, str]], grace: float) -> int:
    """Start one process per environment and supervise them, like ``torchrun --standalone``.

    SIGINT/SIGTERM/SIGHUP/SIGQUIT go to every rank; when a rank fails the others get SIGTERM, then SIGKILL after
    ``grace`` seconds; the exit code is the first failing rank's (128+N for signal N), else 0.
    """
    import gc
    import subprocess
    import time

    gc.enable()  # off for a quick start (launcher/ds-helper); this process stays for the whole job
    waited = {signal.SIGCHLD, *_FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    children: Dict[int, subprocess.Popen[bytes]] = {}
    setup = _child_setup(os.getpid())
    try:
        for env in envs:
            proc = subprocess.Popen(command, env=env, preexec_fn=setup)
            children[proc.pid] = proc
    except OSError as exc:
        for proc in children.values():
            proc.kill()
        raise LaunchError(f"cannot start {command[0]}: {exc.strerror}") from None
    failure: Optional[int] = None
    kill_at: Optional[float] = None

    def stop(signum: int) -> None:
        for proc in children.values():
            if proc.returncode is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    while any(proc.returncode is None for proc in children.values()):
        timeout = 1.0 if kill_at is None else min(1.0, max(0.0, kill_at - time.monotonic()))
        info = signal.sigtimedwait(waited, timeout)
        if info is not None and info.si_signo != signal.SIGCHLD:
            stop(info.si_signo)
            kill_at = kill_at or time.monotonic() + grace
        for proc in children.values():
            if proc.returncode is not None:
                continue
            returned = proc.poll()
            if returned is not None:
                code = 128 - returned if returned < 0 else returned
                if code and failure is None:
                    failure = code
                    stop(signal.SIGTERM)
                    kill_at = kill_at or time.monotonic() + grace
        if kill_at is not None and time.monotonic() >= kill_at:
            stop(signal.SIGKILL)
            kill_at = float("inf")
    return failure or 0


# --- the whole start ------------------------------------------------------------------------------------------


def start_job(
    plan: Plan, spec: LauncherSpec, job: JobSpec, args: List[str], env: Mapping[str, str], binds: bool
) -> NoReturn:
    """Validate once, then exec the manager (or start the local ranks); dry run: show it and start nothing."""
    shape = job_shape(job)
    local = not spec.start.program and not spec.start.cannot
    if local:
        if (shape.nodes or 1) > 1 or (shape.ranks_per_node not in (None, shape.ranks)):
            raise LaunchError(
                f"launcher={spec.name} starts ranks on this machine only; a job on several nodes needs a manager "
                "(launcher=mpich, openmpi, slurm, ...)"
            )
        if shape.ranks is None:
            raise LaunchError(f"launcher={spec.name}: give job.ranks=N to start N ranks on this machine")
        shape = replace(shape, nodes=1, ranks_per_node=shape.ranks)
    if binds and (local or (shape.nodes == 1 and not shape.hosts)):
        node_binding(plan, spec, shape)  # the ranks run on this machine: a binding that cannot work fails here, once
    port = plan.master.port if plan.master.port is not None else free_port()
    ranks = rank_plan(plan, spec, shape, port, args)
    text = plan_to_json(ranks)
    command = rank_command() if local else start_command(spec, job, shape, binds, env, text)
    if plan.dry_run:
        print_job(ranks, spec, shape, command, local, text)
        raise SystemExit(0)
    base = {k: v for k, v in env.items() if k != PLAN_VAR}
    base[PLAN_VAR] = text
    if local:
        size = shape.ranks or 1
        envs = [{**base, **local_rank_env(spec, rank, size)} for rank in range(size)]
        sys.stdout.flush()
        code = run_local(command, envs, plan.log.grace)
        sys.stderr.flush()
        os._exit(code)  # nothing left to clean up; skips tearing down the composed interpreter (~0.2 s)
    import shutil

    program = shutil.which(command[0], path=base.get("PATH"))
    if program is None:
        raise LaunchError(f"launcher={spec.name}: {command[0]!r} not found on PATH (job.program=NAME picks another)")
    if not plan.log.quiet:
        print(f"ds-helper: job of {_size(shape)}: {_show(command, text)}", file=sys.stderr)
    sys.stderr.flush()
    try:
        os.execve(program, command, base)
    except OSError as exc:
        raise LaunchError(f"cannot run {program}: {exc.strerror}") from None


def _size(shape: Shape) -> str:
    return "the allocation's ranks" if shape.ranks is None else f"{shape.ranks} ranks"


def _show(command: List[str], plan_json: str) -> str:
    """The command as a shell would take it, with the plan's value shown by name."""
    from ds_helper.rank.become import shell_quote

    def shown(arg: str) -> str:
        before, found, after = arg.partition(plan_json)
        if not found:
            return shell_quote(arg)
        return "".join([shell_quote(before) if before else "", f'"${PLAN_VAR}"', shell_quote(after) if after else ""])

    return " ".join(shown(arg) for arg in command)


def layout_rows(shape: Shape) -> List[Tuple[str, ...]]:
    """One row per rank: rank, node, host, local rank (the block layout)."""
    per_node, total = shape.ranks_per_node, shape.ranks
    if per_node is None or total is None:
        return []
    rows: List[Tuple[str, ...]] = []
    for rank in range(total):
        node, local = divmod(rank, per_node)
        host = shape.hosts[node] if node < len(shape.hosts) else ("this machine" if shape.nodes == 1 else "?")
        rows.append((str(rank), str(node), host, str(local)))
    return rows


def node_binding(plan: Plan, spec: LauncherSpec, shape: Shape) -> str:
    """Cores, memory and GPUs of each local rank, as on this machine (the same on every node like it)."""
    from ds_helper.rank import bind

    if shape.ranks_per_node is None:
        return ""
    return bind.for_rank(
        plan.bind,
        local_rank=0,
        local_world_size=shape.ranks_per_node,
        launcher=spec.name,
        env=os.environ,
        dry_run=False,
    ).table


def print_job(plan: Plan, spec: LauncherSpec, shape: Shape, command: List[str], local: bool, text: str) -> None:
    how = "started by ds-helper itself (no manager)" if local else f"started by {command[0]}"
    print(f"ds-helper dry run: job of {_size(shape)}, launcher={spec.name}, {how}")
    nodes = shape.nodes if shape.nodes is not None else "manager decides"
    print(f"  nodes: {nodes}, ranks per node: {shape.ranks_per_node or 'manager decides'}")
    print(f"  MASTER_PORT: {plan.job_port}; the plan ({len(text)} bytes) travels in {PLAN_VAR}")
    print(f"  command: {_show(command, text)}")
    rows = layout_rows(shape)
    if rows:
        header = ("rank", "node", "host", "local rank")
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        print("  layout:")
        for row in (header, *rows):
            print("    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    table = node_binding(plan, spec, shape)
    if table:
        print("  binding of each node's local ranks (as on this machine):")
        for line in table.splitlines():
            print(f"    {line}")
    print(f"  each rank runs: {_show([*plan.argv, *plan.args], text)}")
