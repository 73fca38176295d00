"""Echoes stdin (unless --no-stdin) to stdout, writes a line to stderr, and to the descriptor named by WRITE_FD if set."""

import os
import sys

data = "" if "--no-stdin" in sys.argv else sys.stdin.read()
sys.stdout.write(f"stdin: {data}")
sys.stderr.write("to stderr\n")
if "WRITE_FD" in os.environ:
    os.write(int(os.environ["WRITE_FD"]), b"through an inherited descriptor\n")
