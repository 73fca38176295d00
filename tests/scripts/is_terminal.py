"""Says whether its stdout is a terminal (Python then writes it a line at a time, and libraries colour it)."""

import os

print(f"stdout is a terminal: {os.isatty(1)}")
