"""Ignores SIGTERM (a trainer stuck in C++ would too), prints its pid, then sleeps."""

import os
import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"ready {os.getpid()}", flush=True)
time.sleep(120)
