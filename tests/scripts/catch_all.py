"""A rank that notes each of INT TERM HUP QUIT USR1 USR2 it receives in SIGNAL_DIR/<rank>, and carries on.

It exits 0 after SIGTERM (or after 120 s). With WITH_CHILD set, it first starts a child that handles none of
them and sleeps, its arguments in the child's command line.
"""

import os
import signal
import subprocess
import sys
import time

# Run alone, by ds-helper or directly by a manager (no ds-helper in between).
RANK_NAMES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")

rank = next((os.environ[n] for n in RANK_NAMES if n in os.environ), "0")
record = os.path.join(os.environ["SIGNAL_DIR"], rank)
names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
done = []


def note(signum, frame):
    with open(record, "a") as file:
        file.write(f"{signal.Signals(signum).name}\n")
    if signum == signal.SIGTERM:
        done.append(True)


for name in names:
    signal.signal(getattr(signal, name), note)
if "WITH_CHILD" in os.environ:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *sys.argv[1:]])
print(f"ready {rank}", flush=True)
deadline = time.monotonic() + 120
while not done and time.monotonic() < deadline:
    time.sleep(0.05)
