"""Writes LINES lines of WIDTH copies of its rank's digit, each line in two writes (the text, then the newline),
as an unbuffered ``print`` does: the worst case for lines of several ranks arriving whole."""

import os

rank = os.environ.get("RANK", "0")
line = (rank[-1] * int(os.environ.get("WIDTH", "150"))).encode()
for _ in range(int(os.environ.get("LINES", "1500"))):
    os.write(1, line)
    os.write(1, b"\n")
