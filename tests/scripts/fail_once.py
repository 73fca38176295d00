"""Prints what this attempt of the job sees as JSON; rank 1 fails (exit 3) while the restart count is below
FAIL_TIMES (default 1), once rank 0 has printed (it leaves a mark in SIGNAL_DIR), so no line is lost."""

import json
import os
import sys
import time

names = ("RANK", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT", "DS_HELPER_RESTART_COUNT")
print(json.dumps({name: os.environ.get(name) for name in names}), flush=True)
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
mark = os.path.join(os.environ["SIGNAL_DIR"], f"printed-{attempt}")
if os.environ["RANK"] == "0":
    open(mark, "w").close()
elif attempt < int(os.environ.get("FAIL_TIMES", "1")):
    deadline = time.monotonic() + 60
    while not os.path.exists(mark) and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(3)
