"""The time of one Tab: a completion request next to ``ds-helper --help`` and bare python, in a clean venv.

Not a test: a plain script that prints one table (and the command and machine facts that made it).

    python bench/completion.py [--rounds 41] [--venv DIR]

The venv is ``bench/startup.py``'s (its docstring says what clean means; ds-helper is re-installed from this
checkout, not editable). Every row is one process run to its end, as a shell runs it on each Tab
(``ds-helper --complete-words WORD ...``, what the scripts of ``ds-helper --completion SHELL`` call). Rounds are
interleaved, after one warm-up run per row; ``wall ms`` is the median, ``x bare`` that median over bare python's,
``x --help`` over ``ds-helper --help``'s (which composes nothing but imports Hydra to list the group options).
The recipe and launcher rows have a team folder of 50 recipes and a site folder of 5 launchers on their path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Dict, List

from startup import CLEAN_VENV, base_python, clean_venv, machine_facts, timed

DEFAULT_ROUNDS = 41


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds (%(default)s)")
    parser.add_argument("--venv", default=CLEAN_VENV, help="the clean venv (made if missing; default %(default)s)")
    parser.add_argument("--base-python", default=base_python(), help="makes the venv (default %(default)s)")
    opts = parser.parse_args()
    load = os.getloadavg()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_HELPER", "PYTHON", "VIRTUAL_ENV"))}
    python = clean_venv(opts.venv, opts.base_python, env)
    ds_helper = os.path.join(os.path.dirname(python), "ds-helper")

    with tempfile.TemporaryDirectory(prefix="ds-bench-") as work:
        for folder, count in (("team", 50), ("site", 5)):
            os.mkdir(os.path.join(work, folder))
            for index in range(count):
                with open(os.path.join(work, folder, f"{folder}_{index}.yaml"), "w") as f:
                    f.write(f"name: {folder}_{index}\n")
        env["DS_HELPER_RECIPE_PATH"] = os.path.join(work, "team")
        env["DS_HELPER_LAUNCHER_PATH"] = os.path.join(work, "site")
        tab = [ds_helper, "--complete-words", "launcher=local"]
        rows: Dict[str, List[str]] = {
            "python -c pass": [python, "-c", "pass"],
            "Tab: a flag (--pl)": [*tab, "--pl"],
            "Tab: a key (bind.co)": [*tab, "bind.co"],
            "Tab: a recipe (recipe=)": [*tab, "recipe="],
            "Tab: a launcher (launcher=)": [*tab, "launcher="],
            "Tab: the script (tr)": [*tab, "tr"],
            "ds-helper --help": [ds_helper, "--help"],
        }
        for argv in rows.values():
            timed(argv, work, env)  # warm-up: page cache, .pyc
        walls: Dict[str, List[float]] = {name: [] for name in rows}
        for _ in range(opts.rounds):
            for name, argv in rows.items():
                walls[name].append(timed(argv, work, env)[0])

    median = {name: statistics.median(times) for name, times in walls.items()}
    print(f"command: python bench/completion.py --rounds {opts.rounds}")
    for line in machine_facts(python, ds_helper, "mpiexec.mpich", load)[:2]:  # its third line is the MPI's
        print(line)
    print()
    print("| row | wall ms | x bare | x --help |")
    print("|---|---:|---:|---:|")
    for name in rows:
        ms = median[name] * 1000
        bare, helped = median[name] / median["python -c pass"], median[name] / median["ds-helper --help"]
        print(f"| {name} | {ms:.1f} | {bare:.2f} | {helped:.2f} |")


if __name__ == "__main__":
    main()
