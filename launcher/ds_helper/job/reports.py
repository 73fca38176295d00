"""What a manager says of its ranks' ends, read for a failed job's last lines (job/supervisor.py's ``summary``).

Two kinds of report, each declared in the launcher's YAML ``start`` block: ``failure``, a regular expression of the
manager's own line naming the first rank to fail (Open MPI, srun), and ``exit_codes``, a line listing every rank's
exit code (Hydra's ``-print-all-exitcodes``: MPICH, Intel MPI). Standard library only.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from typing import List, Optional, Pattern

from ds_helper.rank.plan import ExitCodesSpec

_CLEAN_UP = 128 + signal.SIGKILL
"""How a manager ends the ranks left when one failed (Hydra's clean-up): never the root cause when another failed."""


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGSEGV (exit code 139)``, from a shell-style code."""
    if code > 128 and code - 128 in {int(s) for s in signal.Signals}:
        return f"was killed by {signal_name(code - 128)} (exit code {code})"
    return f"exited with code {code}"


@dataclass(frozen=True)
class ReportLines:
    """How a report is found in the output it arrives in: its first line, then each line that continues it."""

    start: bytes  # how its first line begins: a partial line that begins so waits for its end
    first: Pattern[bytes]
    more: Pattern[bytes]


def report_lines(report: ExitCodesSpec) -> Optional[ReportLines]:
    """``start.exit_codes``' report as byte patterns, to keep it off the output: its first line, then one host's
    part (groups ``host``, ``codes``) on a line of its own (Hydra writes one host per line); None: no report."""
    if not report.line:
        return None
    more = rb"[ \t]*(?:" + report.host.encode() + rb")[ \t]*\n"  # a whole line of one host's part
    return ReportLines(report.start.encode(), re.compile(report.line.encode()), re.compile(more))


@dataclass(frozen=True)
class RankEnd:
    """How one rank ended, as its manager reports it."""

    rank: Optional[int]  # None: the report names no rank
    host: str  # "": not named
    code: Optional[int]  # shell-style (128+N for signal N); None: not named
    others: int = 0  # other ranks that failed too (a report of every rank's code)

    def details(self) -> str:
        """``rank 1 (host vm, exited with code 3, as the manager reports it; 1 more rank failed)``."""
        parts = [f"host {self.host}"] if self.host else []
        parts += [describe_status(self.code)] if self.code is not None else []
        parts.append("as the manager reports it")
        more = f"; {self.others} more rank{'s' if self.others > 1 else ''} failed" if self.others else ""
        rank = "?" if self.rank is None else str(self.rank)
        return f"rank {rank} ({', '.join(parts)}{more})"


def first_failure(pattern: str, text: str) -> Optional[RankEnd]:
    """The manager's own line naming the first rank to fail (``start.failure``; its last match), if it wrote one."""
    found = list(re.finditer(pattern, text)) if pattern else []
    if not found:
        return None
    groups = found[-1].groupdict()
    rank, code = groups.get("rank"), groups.get("code")
    return RankEnd(
        rank=int(rank) if rank else None,
        host=groups.get("host") or "",
        code=int(code) if code else None,
    )


def _shell_code(code: int, wait_status: bool) -> int:
    if not wait_status:
        return code
    return 128 + os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)


def every_rank(report: ExitCodesSpec, text: str) -> List[RankEnd]:
    """Each rank's end from a report of all of them (``text``, the lines ``ReportLines`` found): hosts in the
    report's order, each host's ranks in order (the block placement ds-helper asks of the manager), from 0."""
    found = re.search(report.line, text) if report.line else None
    if found is None:
        return []
    ends: List[RankEnd] = []
    for part in re.finditer(report.host, text[found.start() :]):
        for code in part.group("codes").split(","):
            ends.append(RankEnd(len(ends), part.group("host"), _shell_code(int(code), report.wait_status)))
    return ends


def root_cause(ends: List[RankEnd]) -> Optional[RankEnd]:
    """The failed rank to name from a report of every rank: the lowest one that did not die of the manager's clean-up
    (SIGKILL) when there is one, as the report says nothing of who ended first; ``others``: how many more did."""
    failed = [end for end in ends if end.code]
    own = [end for end in failed if end.code != _CLEAN_UP] or failed  # who failed of their own accord
    if not own:
        return None
    return RankEnd(own[0].rank, own[0].host, own[0].code, others=len(own) - 1)
