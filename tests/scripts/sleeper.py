"""Prints ready and sleeps; its arguments only mark it in /proc/*/cmdline."""

import os
import time

print(f"ready {os.getpid()}", flush=True)
time.sleep(120)
