"""The local ranks' supervisor: a job with no manager (``ds-helper job.ranks=N``), its ranks started and watched
here, like ``torchrun --standalone``."""

from __future__ import annotations

import os
import signal
from typing import Callable, Dict, List, Optional

from ds_helper.rank.errors import LaunchError
from ds_helper.rank.inherit import death_signal_setter
from ds_helper.rank.plan import LauncherSpec


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


def supervise_local_ranks(command: List[str], envs: List[Dict[str, str]], grace: float) -> int:
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
        for index, env in enumerate(envs):
            # As under mpiexec: descriptors passed down to ds-helper stay open in every rank; stdin is rank 0's.
            stdin = None if index == 0 else subprocess.DEVNULL
            proc = subprocess.Popen(command, env=env, preexec_fn=setup, close_fds=False, stdin=stdin)
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
