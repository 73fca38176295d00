"""The least a rank can spend composing with Hydra: the floor row under ``ds-helper (compose)`` in bench/startup.py.

    python bench/hydra_floor.py [--no-exec] SCRIPT

Imports Hydra, composes a primary config that holds nothing but what conf/config.yaml says of Hydra's own groups
(all null: nothing of ``@hydra.main`` is loaded), and execs ``python -u SCRIPT`` as a composing ds-helper rank does
at the end; with ``--no-exec`` it stops after composing (for peak RSS). No schema, no config groups, no overrides,
no validation, no plan: whatever ds-helper does, a rank that composes with Hydra costs at least this much.
"""

import gc

gc.disable()  # as ds-helper's command starts (launcher/ds-helper)

import os  # noqa: E402
import sys  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402

HYDRA_GROUPS = ("job_logging", "hydra_logging", "help", "hydra_help", "output", "env", "launcher", "sweeper")
# A folder of no configs (this one): the primary config comes from the ConfigStore. Plain initialize() would look
# for its caller with inspect.stack(), which reads every frame's source, ~10 ms a rank never spends.
FOLDER = os.path.dirname(os.path.abspath(__file__))


def store_config() -> None:
    """The primary config: only conf/config.yaml's nulls for Hydra's own groups."""
    defaults = ["_self_", *({f"override hydra/{group}": None} for group in HYDRA_GROUPS)]
    ConfigStore.instance().store(name="config", node={"defaults": defaults})


def main() -> None:
    no_exec = sys.argv[1] == "--no-exec"
    script = sys.argv[-1]
    store_config()
    with initialize_config_dir(FOLDER, version_base="1.3"):
        compose(config_name="config")
    if not no_exec:
        os.execv(sys.executable, [sys.executable, "-u", script])


if __name__ == "__main__":
    main()
