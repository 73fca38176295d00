"""Writes SIZE bytes (argv[1], default 40 MB) of '.' without a single newline, in 1 MiB writes."""

import os
import sys

size = int(sys.argv[1]) if len(sys.argv) > 1 else 40 * 2**20
chunk = b"." * 2**20
for start in range(0, size, len(chunk)):
    os.write(1, chunk[: size - start])
