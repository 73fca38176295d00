"""A rank that notes each of INT TERM HUP QUIT USR1 USR2 it receives in SIGNAL_DIR/<rank>, and carries on.

It exits 0 after SIGTERM (or after 120 s).
"""

import os
import signal
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
print(f"ready {rank}", flush=True)
deadline = time.monotonic() + 120
while not done and time.monotonic() < deadline:
    time.sleep(0.05)
