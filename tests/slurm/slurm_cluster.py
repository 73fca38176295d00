"""A real two-node Slurm cluster on loopback, for tests.

Runs one private ``munged`` (as the ``munge`` user, on its own socket and key),
one ``slurmctld`` and two ``slurmd`` (``-N node1`` and ``-N node2``) on this
machine. Both nodes have ``NodeAddr=127.0.0.1`` and different ports, so
``srun -N 2 -n 4 ...`` starts real multi-node steps.

Everything lives in a private state dir (``STATE_DIR``, default
``/tmp/ds-helper-slurm``; override with ``DS_HELPER_SLURM_DIR``): slurm.conf,
cgroup.conf, the munge key and socket, spool and state dirs, pid and log files.
Nothing under /etc/slurm or /etc/munge is used or changed. The only system file
changed is /etc/hosts: ``node1`` and ``node2`` are added (127.0.0.1) if missing.

Needs root and the Debian packages (Debian 12, slurm-wlm 22.05)::

    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins

(``slurm-wlm-basic-plugins`` provides select/cons_tres and the mpi plugins
pmi2 and cray_shasta; it is also a dependency of the three slurm packages.)

Command line::

    python tests/slurm/slurm_cluster.py up       # start (or reuse), print client env
    python tests/slurm/slurm_cluster.py status   # exit 0 if up
    python tests/slurm/slurm_cluster.py down     # kill every daemon, remove state dir

Clients only need ``SLURM_CONF`` (see ``SLURM_CONF`` / ``client_env()``).
Stdlib only; subprocess argv lists only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("DS_HELPER_SLURM_DIR", "/tmp/ds-helper-slurm"))
SLURM_CONF = STATE_DIR / "slurm.conf"
NODES = ("node1", "node2")
CPUS_PER_NODE = 2  # = 2 tasks per node for srun -N 2 -n 4; more tasks need --overcommit
CLUSTER_NAME = "dshelper"
# Set in the environment of every daemon we start. slurmstepd inherits it from
# slurmd, so stop() can find every process belonging to this cluster in /proc.
MARKER = "DS_HELPER_SLURM_CLUSTER"
START_TIMEOUT = 60.0

_MUNGE_DIR = STATE_DIR / "munge"
_MUNGE_SOCKET = _MUNGE_DIR / "munge.socket"
_LOG_DIR = STATE_DIR / "log"
_PID_DIR = STATE_DIR / "pid"
_HOSTS = Path("/etc/hosts")

# Popen handles of daemons started by this process (reaped in stop()).
_children: list[subprocess.Popen] = []


class ClusterError(RuntimeError):
    """The cluster could not be started."""


def _find(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin"
    return shutil.which(name, path=path)


def have_slurm() -> bool:
    """True if the client (srun) is installed."""
    return _find("srun") is not None


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running srun/sbatch/sinfo against this cluster.

    Starts from ``base`` (default os.environ) without any inherited SLURM_*,
    PMI_*, PMIX_*, PALS_* variables (so a surrounding allocation cannot leak
    in) and sets SLURM_CONF.
    """
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.startswith(
            (
                "SLURM_",
                "SLURMD_",
                "PMI_",
                "PMIX_",
                "PALS_",
                "SBATCH_",
                "SRUN_",
                "SALLOC_",
            )
        ):
            del env[key]
    env.pop(MARKER, None)
    env["SLURM_CONF"] = str(SLURM_CONF)
    if "/usr/sbin" not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + "/usr/sbin"
    return env


def _run(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ctld_listening() -> bool:
    """Fast pre-check: something accepts connections on our SlurmctldPort.

    Without it, sinfo against a dead controller retries for ~10 s.
    """
    try:
        for line in SLURM_CONF.read_text().splitlines():
            if line.startswith("SlurmctldPort="):
                port = int(line.split("=", 1)[1])
                break
        else:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def node_states() -> dict[str, str]:
    """{node: state} from sinfo, {} if the controller does not answer."""
    sinfo = _find("sinfo")
    if sinfo is None or not _ctld_listening():
        return {}
    try:
        res = _run([sinfo, "-h", "-N", "-o", "%N %T"], timeout=10)
    except subprocess.TimeoutExpired:
        return {}
    if res.returncode != 0:
        return {}
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1].lower()
    return states


def is_up() -> bool:
    """True if our controller answers sinfo and both nodes are usable."""
    states = node_states()
    return all(states.get(n, "").rstrip("*") in ("idle", "mixed", "allocated") for n in NODES)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _ensure_hosts() -> None:
    text = _HOSTS.read_text() if _HOSTS.exists() else ""
    known = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        known.update(fields[1:])
    missing = [n for n in NODES if n not in known]
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        text += "127.0.0.1 " + " ".join(missing) + "  # ds-helper test slurm cluster\n"
        _HOSTS.write_text(text)


def _write_config() -> None:
    ctld_port, *node_ports = _free_ports(1 + len(NODES))
    host = socket.gethostname().split(".")[0]
    s = STATE_DIR
    nodes = "\n".join(
        f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={host} Port={p} "
        f"CPUs={CPUS_PER_NODE} RealMemory=1000 State=UNKNOWN"
        for n, p in zip(NODES, node_ports, strict=True)
    )
    conf = f"""\
# Written by tests/slurm/slurm_cluster.py: two-node loopback test cluster.
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={_MUNGE_SOCKET}
CredType=cred/munge
StateSaveLocation={s}/ctld
SlurmdSpoolDir={s}/spool/%n
SlurmctldPidFile={_PID_DIR}/slurmctld.pid
SlurmdPidFile={_PID_DIR}/slurmd-%n.pid
SlurmctldLogFile={_LOG_DIR}/slurmctld.log
SlurmdLogFile={_LOG_DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SwitchType=switch/none
MinJobAge=10
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
    SLURM_CONF.write_text(conf)
    # Only read when a cgroup plugin is in use (it is not); kept for clarity.
    (s / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")


def _prepare_munge() -> None:
    pw = pwd.getpwnam("munge")
    _MUNGE_DIR.mkdir(mode=0o755, exist_ok=True)
    os.chown(_MUNGE_DIR, pw.pw_uid, pw.pw_gid)
    os.chmod(_MUNGE_DIR, 0o755)
    key = _MUNGE_DIR / "munge.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(128))
    os.chown(key, pw.pw_uid, pw.pw_gid)
    os.chmod(key, 0o600)


def _spawn(name: str, argv: list[str], user: str | None = None) -> subprocess.Popen:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SLURM_CONF": str(SLURM_CONF),
        MARKER: str(STATE_DIR),
        "LANG": "C.UTF-8",
    }
    out = open(_LOG_DIR / f"{name}.out", "ab")  # noqa: SIM115 - kept open by the child
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(STATE_DIR),
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    finally:
        out.close()
    (_PID_DIR / f"{name}.popen.pid").write_text(f"{proc.pid}\n")
    _children.append(proc)
    return proc


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path} (last {lines} lines):\n" + "\n".join(text[-lines:])


def _logs() -> str:
    if not _LOG_DIR.exists():
        return "(no logs)"
    return "\n".join(_tail(p) for p in sorted(_LOG_DIR.iterdir()))


def _wait(pred, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        for p in procs:
            if p.poll() is not None:
                raise ClusterError(f"{what}: {p.args[0]} exited with {p.returncode}\n{_logs()}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{_logs()}")
        time.sleep(0.2)


def start(timeout: float = START_TIMEOUT) -> dict[str, str]:
    """Start the cluster, or reuse it if it already answers sinfo.

    Returns the client env (see client_env()). Raises ClusterError with the
    daemons' log tails if the nodes are not idle within ``timeout`` seconds.
    """
    if is_up():
        return client_env()
    if os.geteuid() != 0:
        raise ClusterError("the loopback Slurm cluster needs root (slurmd, munged as munge)")
    binaries = {n: _find(n) for n in ("munged", "slurmctld", "slurmd", "sinfo", "srun")}
    missing = [n for n, p in binaries.items() if p is None]
    if missing:
        raise ClusterError(f"missing binaries {missing}; see the apt-get line in {__file__}")
    stop()  # leftovers of a half-started or crashed cluster
    for d in (STATE_DIR, _LOG_DIR, _PID_DIR, STATE_DIR / "ctld", STATE_DIR / "spool"):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE_DIR, 0o755)
    _ensure_hosts()
    _write_config()
    _prepare_munge()

    munged = _spawn(
        "munged",
        [
            binaries["munged"],
            "--foreground",
            f"--socket={_MUNGE_SOCKET}",
            f"--key-file={_MUNGE_DIR / 'munge.key'}",
            f"--pid-file={_MUNGE_DIR / 'munged.pid'}",
            f"--seed-file={_MUNGE_DIR / 'munged.seed'}",
            f"--log-file={_MUNGE_DIR / 'munged.log'}",
        ],
        user="munge",
    )
    _wait(_MUNGE_SOCKET.exists, 15, "the munge socket", [munged])

    ctld = _spawn("slurmctld", [binaries["slurmctld"], "-D", "-i", "-f", str(SLURM_CONF)])
    daemons = [munged, ctld]
    for node in NODES:
        (STATE_DIR / "spool" / node).mkdir(exist_ok=True)
        daemons.append(
            _spawn(
                f"slurmd-{node}",
                [binaries["slurmd"], "-D", "-N", node, "-f", str(SLURM_CONF)],
            )
        )
    try:
        _wait(is_up, timeout, "both nodes idle in sinfo", daemons)
    except ClusterError as e:
        stop()  # e already carries the daemons' log tails
        raise ClusterError(f"could not start the loopback Slurm cluster: {e}") from None
    return client_env()


def _our_pids() -> list[int]:
    """Pids whose environment carries MARKER=STATE_DIR (daemons and slurmstepd)."""
    want = f"{MARKER}={STATE_DIR}".encode()
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _recorded_pids() -> list[int]:
    pids = []
    if _PID_DIR.exists():
        for p in _PID_DIR.glob("*.popen.pid"):
            try:
                pids.append(int(p.read_text().strip()))
            except ValueError:
                pass
    return pids


def stop(timeout: float = 10.0) -> None:
    """Cancel all jobs, kill every daemon of this cluster, remove STATE_DIR."""
    scancel = _find("scancel")
    if scancel and SLURM_CONF.exists() and node_states():
        try:
            _run([scancel, "--full", "--quiet"], timeout=10)
        except subprocess.TimeoutExpired:
            pass
    # Daemons found by marker, plus the pids we recorded (in case /proc/*/environ
    # is unreadable). A recorded pid is only trusted if it still has the marker
    # or is one of our own Popen children.
    mine = {p.pid for p in _children}
    pids = set(_our_pids()) | {p for p in _recorded_pids() if p in mine}
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for child in _children:
                child.poll()
            pids = {p for p in pids | set(_our_pids()) if _alive(p)}
            if not pids:
                break
            time.sleep(0.1)
        if not pids:
            break
    for child in _children:
        try:
            child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    _children.clear()
    if pids:
        raise ClusterError(f"could not kill Slurm test daemons {sorted(pids)}")
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "up":
        t0 = time.monotonic()
        reused = is_up()
        try:
            start()
        except ClusterError as e:
            print(e, file=sys.stderr)
            return 1
        what = "reused" if reused else f"started in {time.monotonic() - t0:.1f}s"
        print(f"# loopback slurm cluster {what}", file=sys.stderr)
        print(f"export SLURM_CONF={SLURM_CONF}")
        return 0
    if cmd == "down":
        try:
            stop()
        except ClusterError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    if cmd == "status":
        states = node_states()
        print(" ".join(f"{n}={s}" for n, s in sorted(states.items())) or "down")
        return 0 if is_up() else 1
    print("usage: python tests/slurm/slurm_cluster.py up|down|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
