"""Probe how Slurm signals tasks and what srun exits with (see tests/slurm/README.md).

    python tests/slurm/slurm_probe_signals.py     # needs the loopback cluster (started/reused)

Prints one line per experiment. Stdlib only, argv lists only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster

# Task body: log every catchable signal it receives (with its rank), then keep running.
TASK = r"""
import os, signal, sys, time
log = sys.argv[1]
def h(sig, frame):
    with open(log, "a") as f:
        f.write(f"{os.environ.get('SLURM_PROCID')} {signal.Signals(sig).name} {time.time():.2f}\n")
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
          signal.SIGUSR2, signal.SIGCONT, signal.SIGALRM):
    signal.signal(s, h)
with open(log, "a") as f:
    f.write(f"{os.environ.get('SLURM_PROCID')} started {time.time():.2f}\n")
end = time.time() + float(sys.argv[2])
while time.time() < end:
    time.sleep(0.05)
"""


def env() -> dict[str, str]:
    return slurm_cluster.client_env()


def wait_started(log: Path, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("started") >= n:
            return
        time.sleep(0.1)
    raise RuntimeError("tasks did not start")


def job_id_of(name: str) -> str:
    res = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i"],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.split()[0]


def launch(tmp: Path, tag: str, ntasks: int, linger: float, extra: list[str] = ()):
    log = tmp / f"{tag}.log"
    argv = ["srun", "-J", tag, "-N", "1", "-n", str(ntasks), *extra]
    argv += [sys.executable, "-c", TASK, str(log), str(linger)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_started(log, ntasks)
    return proc, log, t0


def finish(proc, log, t0, tag):
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    dt = time.monotonic() - t0
    got = [ln for ln in log.read_text().splitlines() if "started" not in ln]
    sigs = sorted({ln.split()[1] for ln in got})
    errs = " | ".join(ln.strip() for ln in err.splitlines())
    print(f"{tag}: srun rc={proc.returncode} after {dt:.1f}s; task saw {sigs or 'no signal'}; srun stderr: {errs}")


def exp_scancel(tmp: Path, tag: str, target: str, args: list[str], linger: float = 8) -> None:
    proc, log, t0 = launch(tmp, tag, 2, linger)
    jid = job_id_of(tag)
    tgt = jid if target == "job" else f"{jid}.0"
    subprocess.run(["scancel", *args, tgt], env=env(), check=False)
    finish(proc, log, t0, f"{tag} (scancel {' '.join(args)} {tgt})")


def exp_signal_srun(tmp: Path, tag: str, sig: signal.Signals, times: int = 1) -> None:
    proc, log, t0 = launch(tmp, tag, 2, 8)
    for _ in range(times):
        proc.send_signal(sig)
        time.sleep(0.3)
    finish(proc, log, t0, f"{tag} ({sig.name} x{times} to srun)")


def exp_exit(tag: str, args: list[str], body: str) -> None:
    t0 = time.monotonic()
    res = subprocess.run(
        ["srun", "-J", tag, *args, sys.executable, "-c", body],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errs = " | ".join(ln.strip() for ln in res.stderr.splitlines())
    dt = time.monotonic() - t0
    print(f"{tag}: srun {' '.join(args)} rc={res.returncode} after {dt:.1f}s; stderr: {errs}")


def main() -> int:
    slurm_cluster.start()
    with tempfile.TemporaryDirectory(dir=slurm_cluster.STATE_DIR) as d:
        tmp = Path(d)
        exp_scancel(tmp, "cancel-step", "step", [])
        exp_scancel(tmp, "cancel-job", "job", [])
        exp_scancel(tmp, "cancel-step-TERM", "step", ["--signal=TERM"], linger=3)
        exp_scancel(tmp, "cancel-job-TERM", "job", ["--signal=TERM"], linger=3)
        exp_scancel(tmp, "cancel-job-TERM-full", "job", ["--signal=TERM", "--full"], linger=3)
        exp_signal_srun(tmp, "srun-SIGTERM", signal.SIGTERM)
        exp_signal_srun(tmp, "srun-SIGINT", signal.SIGINT)
        exp_signal_srun(tmp, "srun-SIGINT-twice", signal.SIGINT, times=2)
        exp_signal_srun(tmp, "srun-SIGUSR1", signal.SIGUSR1)
    exp_exit("exit3-single", ["-N", "1", "-n", "1"], "raise SystemExit(3)")
    exp_exit(
        "exit3-one-of-4",
        ["-N", "2", "-n", "4"],
        "import os, time\nif os.environ['SLURM_PROCID'] == '2':\n    raise SystemExit(3)\ntime.sleep(3)",
    )
    exp_exit(
        "exit3-one-of-4-kill-on-bad-exit",
        ["-N", "2", "-n", "4", "--kill-on-bad-exit=1"],
        "import os, time\nif os.environ['SLURM_PROCID'] == '2':\n    raise SystemExit(3)\ntime.sleep(3)",
    )
    exp_exit(
        "sigkill-single",
        ["-N", "1", "-n", "1"],
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    )
    exp_exit(
        "sigkill-one-of-4",
        ["-N", "2", "-n", "4"],
        "import os, signal, time\nif os.environ['SLURM_PROCID'] == '1':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(3)",
    )
    exp_exit(
        "sigterm-single",
        ["-N", "1", "-n", "1"],
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    )
    exp_exit(
        "exit3-and-sigkill",
        ["-N", "1", "-n", "2"],
        "import os, signal, time\nif os.environ['SLURM_PROCID'] == '0':\n    raise SystemExit(3)\n"
        "time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
