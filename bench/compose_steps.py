"""What one composing rank spends its CPU on, step by step: one table (bench/README.md, compose path).

    PYTHON bench/compose_steps.py [--runs 7] [--launcher auto]

Run it with the interpreter of the venv to measure (``bench/startup.py`` keeps a clean one in
``~/.cache/ds-helper-bench/clean-venv``). Each step is timed in CPU time (``time.process_time``), not wall time, so
other load on a shared machine matters less; the imports are timed in fresh interpreters (median of ``--runs``), the
steps after them in one process (best of ``--runs``, caches of the first run excluded only where Hydra keeps one
per process anyway, which a rank does not). The table is what ``ds-helper launcher=L script=script.py`` does on a
rank before it execs the script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, List

IMPORT = "import time; t = time.process_time(); {stmt}; print((time.process_time() - t) * 1000)"


def import_ms(stmt: str, runs: int) -> float:
    """Median CPU ms of ``stmt`` as the first thing a fresh interpreter does."""
    out = [
        float(subprocess.run([sys.executable, "-c", IMPORT.format(stmt=stmt)], capture_output=True, text=True).stdout)
        for _ in range(runs)
    ]
    return statistics.median(out)


def best_ms(step: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--launcher", default="auto")
    opts = parser.parse_args()
    runs = opts.runs

    rows: List[tuple[str, float]] = [
        ("import hydra + omegaconf", import_ms("import hydra, omegaconf", runs)),
        ("import ds_helper.compose (with Hydra)", import_ms("import ds_helper.compose", runs)),
        ("import the rank path (cli, plan, resolve, run)", import_ms("import ds_helper.cli, ds_helper.run", runs)),
    ]
    from ds_helper import compose
    from ds_helper.argv import parse_argv
    from ds_helper.cli import compose_request
    from ds_helper.plan import make_plan
    from ds_helper.resolve import resolve

    work = tempfile.mkdtemp(prefix="ds-bench-steps-")
    os.chdir(work)
    with open("script.py", "w") as f:
        f.write("pass\n")
    overrides = [f"launcher={opts.launcher}", "script=script.py"]

    def context() -> None:
        with compose.hydra_context():
            pass

    with compose.hydra_context():
        cfg = compose.compose(config_name="config", overrides=overrides)
        rows.append(
            ("Hydra compose() of config.yaml + overrides", best_ms(lambda: compose.compose("config", overrides), runs))
        )
        rows.append(
            ("OmegaConf.to_object (the composed config)", best_ms(lambda: compose.OmegaConf.to_object(cfg), runs))
        )
        rows.append(("second schema pass (_typed; now only with +key=)", best_ms(lambda: compose._typed(cfg), runs)))
        rows.append(("launcher=auto: every candidate (load_launchers)", best_ms(compose.load_launchers, runs)))
    rows.append(("hydra_context (ConfigStore schema, initialize)", best_ms(context, runs)))
    request = parse_argv(overrides)
    config, candidates = compose_request(request)
    rows.append(
        ("whole compose_request (argv to Config)", best_ms(lambda: compose_request(parse_argv(overrides)), runs))
    )
    plan = make_plan(config, candidates)
    rows.append(("make_plan", best_ms(lambda: make_plan(config, candidates), runs)))
    env = {"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2", "PATH": "/bin"}
    rows.append(("resolve (one rank)", best_ms(lambda: resolve(plan, env, []), runs)))

    print(f"command: {sys.executable} bench/compose_steps.py --runs {runs} --launcher {opts.launcher}")
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| step | CPU ms |")
    print("|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
