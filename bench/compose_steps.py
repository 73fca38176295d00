"""What one composing rank spends its CPU on, step by step, beside Hydra's own floor: one table (bench/README.md).

    PYTHON bench/compose_steps.py [--runs 15] [--launcher auto]

Run it with the interpreter of the venv to measure (``bench/startup.py`` keeps a clean one in
``~/.cache/ds-helper-bench/clean-venv``). Each run is a fresh interpreter that does what ``ds-helper launcher=L
script=script.py`` does on a rank before it execs the script, cold, as a rank does it once, with automatic garbage
collection off as ds-helper's command starts (launcher/ds-helper), and reports the CPU time (``time.process_time``)
of each step; the table shows the median of ``--runs`` runs. The other column, run in turn with it, is
``bench/hydra_floor.py``'s composition (Hydra alone, a config of nothing), timed the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

# One rank's composition, cut where compose/overrides.py (compose_request) and compose/config.py make their calls.
RANK = """
import gc; gc.disable()
import os, sys, time
marks = [("start", time.process_time())]
def mark(step): marks.append((step, time.process_time()))
import hydra, omegaconf; mark("import hydra + omegaconf")
from ds_helper.compose import config as compose, overrides; mark("import ds-helper's compose side (schema, ...)")
from ds_helper.rank.argv import parse_argv
request = parse_argv([f"launcher={sys.argv[1]}", "script=script.py"])
overrides.check_override_keys(request.overrides)
with compose.hydra_context():
    mark("hydra_context: the schema in the ConfigStore, initialize (plugins, search path)")
    cfg = compose._compose_recipe_errors(request.overrides); mark("Hydra compose(): config.yaml, groups, overrides")
    config = compose._object(cfg); mark("to_object: the composed config as the schema's classes")
    candidates = compose.load_launchers() if config.launcher.name == "auto" else []
    mark("launcher=auto: every candidate launcher read and checked")
config.script = request.script or config.script
from ds_helper.compose.planner import make_plan; plan = make_plan(config, candidates); mark("make_plan")
from ds_helper.rank.resolve import resolve; from ds_helper.rank import become; resolve(plan, os.environ, [])
mark("resolve this rank (and import become)")
import json  # only now: a composing rank does not import it (compose/config.py)
print(json.dumps([[step, (t - marks[i][1]) * 1000] for i, (step, t) in enumerate(marks[1:])]))
"""

FLOOR = """
import gc; gc.disable()
import os, sys, time
marks = [("start", time.process_time())]
def mark(step): marks.append((step, time.process_time()))
import hydra, omegaconf; mark("import hydra + omegaconf")
from hydra import compose, initialize_config_dir
sys.path.insert(0, sys.argv[1])
import hydra_floor
hydra_floor.store_config()
with initialize_config_dir(hydra_floor.FOLDER, version_base="1.3"):
    mark("hydra_context: the schema in the ConfigStore, initialize (plugins, search path)")
    compose(config_name="config"); mark("Hydra compose(): config.yaml, groups, overrides")
import json  # only now: a composing rank does not import it (compose/config.py)
print(json.dumps([[step, (t - marks[i][1]) * 1000] for i, (step, t) in enumerate(marks[1:])]))
"""


def steps(codes: Dict[str, tuple[str, List[str]]], runs: int, cwd: str) -> Dict[str, Dict[str, float]]:
    """Median CPU ms of each step of each code over ``runs`` fresh interpreters, the codes run in turn."""
    samples: Dict[str, Dict[str, List[float]]] = {name: {} for name in codes}
    for _ in range(runs):
        for name, (code, argv) in codes.items():
            argv = [sys.executable, "-c", code, *argv]
            out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=True)
            for step, ms in json.loads(out.stdout):
                samples[name].setdefault(step, []).append(ms)
    return {name: {step: statistics.median(v) for step, v in found.items()} for name, found in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--launcher", default="auto")
    opts = parser.parse_args()
    bare = statistics.median(
        float(
            subprocess.run(
                [sys.executable, "-c", "import time; print(time.process_time())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        * 1000
        for _ in range(opts.runs)
    )
    with tempfile.TemporaryDirectory(prefix="ds-bench-steps-") as work:
        with open(os.path.join(work, "script.py"), "w") as f:
            f.write("pass\n")
        bench = os.path.dirname(os.path.abspath(__file__))
        measured = steps({"ours": (RANK, [opts.launcher]), "floor": (FLOOR, [bench])}, opts.runs, work)
        ours, floor = measured["ours"], measured["floor"]

    print(f"command: {sys.executable} bench/compose_steps.py --runs {opts.runs} --launcher {opts.launcher}")
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"a bare interpreter's own start-up, for scale: {bare:.1f} ms CPU\n")
    print("| step (CPU ms, cold) | ds-helper | Hydra alone |")
    print("|---|---:|---:|")
    for step, ms in ours.items():
        print(f"| {step} | {ms:.1f} | {floor[step]:.1f} |" if step in floor else f"| {step} | {ms:.1f} | - |")
    print(f"| total | {sum(ours.values()):.1f} | {sum(floor.values()):.1f} |")


if __name__ == "__main__":
    main()
