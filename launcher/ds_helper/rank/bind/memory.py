"""NUMA memory policy for the script: ``set_mempolicy(2)`` on ds-helper's own process, which ``execve`` keeps.

The system call rather than a ``numactl`` prefix: no extra program on the path, no second exec, and a refusal
(``EPERM`` in containers without CAP_SYS_NICE, DeepSpeed #4971) comes back here, where it can be a warning
instead of a job that dies at start-up. Imported only when a memory policy is to be applied.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # a binding rank runs this: typing is not imported
if TYPE_CHECKING:
    from typing import Optional, Sequence

# <linux/mempolicy.h>
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_PREFERRED_MANY = 5  # Linux 5.15+
# set_mempolicy's number per architecture (asm/unistd.h); uname -m spelling.
_SYSCALL = {"x86_64": 238, "aarch64": 237, "ppc64le": 261, "ppc64": 261, "s390x": 270, "i686": 276}


def set_mempolicy(policy: str, nodes: Sequence[int]) -> Optional[str]:
    """Apply 'bind' or 'preferred' on ``nodes``; None when applied, else why it was not."""
    number = _SYSCALL.get(os.uname().machine)
    if number is None:
        return f"memory binding is not supported on {os.uname().machine}"
    if policy == "bind":
        mode = MPOL_BIND
    elif policy == "preferred":
        mode = MPOL_PREFERRED if len(nodes) == 1 else MPOL_PREFERRED_MANY
    else:
        return f"unknown memory policy {policy!r}"
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    words = max(nodes) // bits + 1
    mask = (ctypes.c_ulong * words)()
    for node in nodes:
        mask[node // bits] |= 1 << (node % bits)
    libc = ctypes.CDLL(None, use_errno=True)  # the C library is already loaded; no ctypes.util lookup
    result = libc.syscall(number, mode, mask, ctypes.c_ulong(words * bits + 1))
    if result != 0:
        return os.strerror(ctypes.get_errno())
    return None
