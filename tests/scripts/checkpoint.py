"""A rank that saves a checkpoint on Ctrl-C (KeyboardInterrupt) or SIGTERM, taking SAVE_SECONDS to do it (a
comma-separated list: rank r takes the r-th, the last one for the rest), then exits SAVED_EXIT (default 130).

Every signal it receives is appended to SIGNAL_DIR/<rank>.signals; a finished save writes SIGNAL_DIR/<rank>.saved.
A second signal in the middle of the save interrupts it, as it would a real one.
"""

import os
import signal
import sys
import time

# Run alone, by ds-helper or directly by a manager (no ds-helper in between).
RANK_NAMES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")

rank = next((os.environ[n] for n in RANK_NAMES if n in os.environ), "0")
record = os.path.join(os.environ["SIGNAL_DIR"], rank)


def note(signum, frame):
    with open(record + ".signals", "a") as file:
        file.write(f"{signal.Signals(signum).name}\n")
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
try:
    print(f"ready {rank}", flush=True)  # inside: a signal right after it still means a save
    time.sleep(120)
except KeyboardInterrupt:
    seconds = os.environ.get("SAVE_SECONDS", "1.5").split(",")
    time.sleep(float(seconds[min(int(rank), len(seconds) - 1)]))
    with open(record + ".saved", "w") as file:
        file.write("saved\n")
    sys.exit(int(os.environ.get("SAVED_EXIT", "130")))
