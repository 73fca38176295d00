"""The least a rank can spend composing with Hydra: the floor row under ``ds-helper (compose)`` in bench/startup.py.

    python bench/hydra_floor.py [--no-exec] SCRIPT

Imports Hydra, composes a primary config that holds nothing but what conf/config.yaml says of Hydra's own groups
(all null: nothing of ``@hydra.main`` is loaded), and execs ``python -u SCRIPT`` as a composing ds-helper rank does
at the end; with ``--no-exec`` it stops after composing (for peak RSS). No schema, no config groups, no overrides,
no validation, no plan: whatever ds-helper does, a rank that composes with Hydra costs at least this much.
"""

import os
import sys

from hydra import compose, initialize
from hydra.core.config_store import ConfigStore

HYDRA_GROUPS = ("job_logging", "hydra_logging", "help", "hydra_help", "output", "env", "launcher", "sweeper")


def main() -> None:
    no_exec = sys.argv[1] == "--no-exec"
    script = sys.argv[-1]
    defaults = ["_self_", *({f"override hydra/{group}": None} for group in HYDRA_GROUPS)]
    ConfigStore.instance().store(name="config", node={"defaults": defaults})
    with initialize(version_base="1.3", config_path=None):
        compose(config_name="config")
    if not no_exec:
        os.execv(sys.executable, [sys.executable, "-u", script])


if __name__ == "__main__":
    main()
