#!/usr/bin/env python3
"""A stand-in for ssh: runs the command on this machine, as sshd would on the named host.

Hydra's ssh launcher calls ``ssh -x HOST WORD ...`` with the words quoted for the remote shell; they are split
here the way that shell would (shlex), never run through a shell.
"""

import os
import shlex
import sys

args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[1:]
command = shlex.split(" ".join(args[1:]))
os.execvp(command[0], command)
