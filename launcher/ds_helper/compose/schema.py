"""The shape of a composed ds-helper config, as dataclasses.

Hydra validates every YAML file and override against these classes (they are registered as structured configs
in ``compose``), and the rest of the pipeline reads them as plain typed objects. Standard library only: the
per-rank fast path imports this module too. Field types stay within what OmegaConf supports (str, int, bool,
Optional, List, Dict, Any), and every field's ``help`` metadata is what ``ds-helper --help`` prints.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from ds_helper.rank.plan import RANK_FIELDS  # the per-rank path's module holds it; the schema's names follow it

FILE, FOLDER = "file", "folder"  # a value that names one: Tab completes file (folder) names for it


def _help(text: str, *, list_keys: bool = True, path: str = "") -> Dict[str, Any]:
    """A field's one-line help for ``--help``; ``list_keys=False``: a group whose keys --help does not list;
    ``path``: the value names a FILE or a FOLDER."""
    return {"help": text, "list_keys": list_keys, "path": path}


@dataclass
class BindSpec:
    """Where each local rank runs: the ``bind`` group's options (``conf/bind/``) and keys (``bind.cores=0-31``)."""

    description: str = field(default="", metadata=_help("the bind option's one line, shown by --help"))
    policy: str = field(
        default="none",
        metadata=_help(
            "none: leave affinity alone; cores: split the core list among the local ranks in contiguous equal "
            "slices of whole cores; numa: spread the local ranks over the NUMA nodes, memory bound there"
        ),
    )
    cores: Any = field(
        default=None,
        metadata=_help(
            "core list to split: 0-31, 1,3-5,7, 0-31:2 (stride), [0,2,4]; null: every CPU this process may use"
        ),
    )
    physical: bool = field(default=False, metadata=_help("one hardware thread per physical core (SMT siblings idle)"))
    remainder: str = field(
        default="drop",
        metadata=_help(
            "cores (or NUMA nodes) that do not divide evenly: drop (equal slices, left-overs named in a note), "
            "spread (the first ranks get one more), error"
        ),
    )
    memory: str = field(
        default="auto",
        metadata=_help(
            "auto: bind memory where a rank's cores are on one NUMA node (preferred on a flat-mode HBM node next "
            "to it); none; local (strict bind); preferred"
        ),
    )
    strict: bool = field(
        default=False, metadata=_help("a refused memory policy (containers: EPERM) is an error, not a warning")
    )
    gpus: Any = field(
        default=None,
        metadata=_help(
            "GPUs per node, dealt out per local rank: a count (4), a list of ids or UUIDs ([0,1]), null: untouched"
        ),
    )
    gpu_vendor: str = field(
        default="nvidia",
        metadata=_help(
            "the variable bind.gpus sets: nvidia (CUDA_VISIBLE_DEVICES), amd (ROCR_VISIBLE_DEVICES), "
            "intel (ZE_AFFINITY_MASK); one already set is an error, never overridden"
        ),
    )
    omp_threads: bool = field(
        default=True, metadata=_help("set OMP_NUM_THREADS to the rank's CPU count, unless already set")
    )


@dataclass
class HostSource:
    """Where a manager lists the hosts of the job, so every rank can name the first one without talking."""

    var: str = field(metadata=_help("environment variable holding the list, or naming a file that holds it"))
    format: str = field(
        default="hostlist",
        metadata=_help("hostlist (Slurm's node[1-4] form), lines (one host per line), words (space-separated)"),
    )
    file: bool = field(default=False, metadata=_help("the variable names a file whose contents are the list"))
    skip: int = field(
        default=0, metadata=_help("lines or words to skip first (LSF's rankfile starts with the launch node)")
    )


@dataclass
class ExitCodesSpec:
    """A manager's report of every rank's end, a line of its output after the job (Hydra's -print-all-exitcodes):
    ds-helper keeps it off the job's output and names the failed rank from it."""

    args: List[str] = field(
        default_factory=list, metadata=_help("the manager's arguments that ask for the report, when ds-helper runs it")
    )
    start: str = field(
        default="", metadata=_help("how the report's first line begins (a partial line that does waits for its end)")
    )
    line: str = field(default="", metadata=_help("regex of the report's first line (kept off the output, as its rest)"))
    host: str = field(
        default="",
        metadata=_help("regex of one host's part, in that line or one after it: groups host, codes (its ranks' codes)"),
    )
    wait_status: bool = field(
        default=False, metadata=_help("the codes are wait statuses (768: exit code 3; 11: SIGSEGV), not exit codes")
    )


@dataclass
class StartSpec:
    """How a manager starts a whole job, as data: ``ds-helper launcher=NAME job.ranks=N`` execs this command.

    Each argument list is a template: ``{ranks}``, ``{nodes}``, ``{ranks_per_node}``, ``{hosts}`` (see
    ``host_form`` and ``host_join``), ``{name}`` and ``{value}`` (the plan's variable). An empty list means the
    manager has no such option; asking for that part of a shape is then one error line.
    """

    local: bool = field(
        default=False, metadata=_help("ds-helper starts the ranks itself, on this machine (no manager's program)")
    )
    program: Optional[str] = field(
        default=None, metadata=_help("the manager's program (job.program overrides); null: cannot start jobs")
    )
    cannot: str = field(default="", metadata=_help("with program null: why this manager cannot start a job"))
    args: List[str] = field(default_factory=list, metadata=_help("arguments always given, right after the program"))
    ranks: List[str] = field(default_factory=list, metadata=_help("how to ask for the total number of ranks"))
    nodes: List[str] = field(default_factory=list, metadata=_help("how to ask for a number of nodes"))
    ranks_per_node: List[str] = field(default_factory=list, metadata=_help("how to ask for ranks per node"))
    hosts: List[str] = field(default_factory=list, metadata=_help("how to name the hosts, in order"))
    host_form: str = field(default="{host}", metadata=_help("one host as the manager writes it ({host}, ...)"))
    host_join: Optional[str] = field(
        default=",", metadata=_help("separator of the hosts in {hosts}; null: one argument per host")
    )
    host_per_rank: bool = field(default=False, metadata=_help("the host list names each rank's host (mpirun_rsh)"))
    needs_hosts: bool = field(default=False, metadata=_help("the manager needs a host list (one node: localhost)"))
    env: List[str] = field(default_factory=list, metadata=_help("how to forward one variable ({name}, {value})"))
    no_bind: List[str] = field(
        default_factory=list, metadata=_help("arguments that stop the manager binding ranks when ds-helper binds")
    )
    allocation: List[str] = field(
        default_factory=list,
        metadata=_help("variables meaning this runs inside an allocation whose shape the manager takes"),
    )
    label: List[str] = field(
        default_factory=list, metadata=_help("the manager's option that puts the rank in front of each line")
    )
    signals: Dict[str, Optional[str]] = field(
        default_factory=dict,
        metadata=_help("signal ds-helper gets (or sends: SIGTERM, SIGKILL) -> what the manager gets; null: none"),
    )
    failure: str = field(
        default="", metadata=_help("regex of the manager's report of the first failed rank: groups rank, code, host")
    )
    exit_codes: ExitCodesSpec = field(
        default_factory=ExitCodesSpec, metadata=_help("the manager's report of every rank's exit code, if it makes one")
    )


@dataclass
class LauncherSpec:
    """One process manager, as data: how to recognise it and where it keeps each rank's numbers.

    Each of the five number fields is an ordered list of sources. A source is an environment variable name
    (``PMI_RANK``) or a per-node count list indexed by another variable (``SLURM_STEP_TASKS_PER_NODE[SLURM_NODEID]``,
    Slurm's ``2(x3),1`` form). The first present source gives the value; every other present one must agree.
    """

    name: str = field(default="???", metadata=_help("the option's name, as in launcher=NAME"))
    description: str = field(default="", metadata=_help("one line shown by --help"))
    detect: List[str] = field(
        default_factory=list, metadata=_help("auto picks this manager only when all of these are set")
    )
    exclude: List[str] = field(default_factory=list, metadata=_help("... and none of these is set"))
    priority: int = field(default=0, metadata=_help("auto tries managers with a higher priority first"))
    rank: List[str] = field(default_factory=list, metadata=_help("sources of the global rank"))
    local_rank: List[str] = field(default_factory=list, metadata=_help("sources of the rank on this node"))
    world_size: List[str] = field(default_factory=list, metadata=_help("sources of the number of ranks"))
    local_world_size: List[str] = field(default_factory=list, metadata=_help("sources of the ranks on this node"))
    node_rank: List[str] = field(default_factory=list, metadata=_help("sources of this node's index"))
    fixed: Dict[str, int] = field(
        default_factory=dict,
        metadata=_help("values the manager defines by construction, used when no source is set (e.g. local_rank: 0)"),
    )
    hosts: List[HostSource] = field(default_factory=list, metadata=_help("host lists; the first host is MASTER_ADDR"))
    job_id: List[str] = field(default_factory=list, metadata=_help("variables holding the job id (for MASTER_PORT)"))
    evidence: List[str] = field(
        default_factory=list,
        metadata=_help("launcher=auto only: variables that mean some manager started this rank (no standalone run)"),
    )
    inside: List[str] = field(
        default_factory=list,
        metadata=_help(
            "managers this one is started under (mpirun in a Slurm step): their variables, which describe the "
            "parent, may disagree with this one's when it runs at least as many ranks"
        ),
    )
    start: StartSpec = field(default_factory=StartSpec, metadata=_help("how this manager starts a whole job"))


@dataclass
class JobSpec:
    """The shape of a whole job: set it and ds-helper starts the job (docs/jobs.md)."""

    ranks: Optional[int] = field(default=None, metadata=_help("total number of ranks"))
    nodes: Optional[int] = field(default=None, metadata=_help("number of nodes"))
    ranks_per_node: Optional[int] = field(default=None, metadata=_help("ranks on each node (block layout)"))
    hosts: List[str] = field(default_factory=list, metadata=_help("host names, in order; the first is MASTER_ADDR"))
    hostfile: Optional[str] = field(
        default=None, metadata=_help("MPI/DeepSpeed hostfile: 'host [slots=N]' a line, # comments", path=FILE)
    )
    program: Optional[str] = field(
        default=None, metadata=_help("the manager's program instead of the launcher's (e.g. mpiexec.mpich)")
    )
    manager_args: List[str] = field(
        default_factory=list, metadata=_help("extra arguments for the manager, passed through as given")
    )
    timeout: Optional[float] = field(
        default=None, metadata=_help("seconds the whole job may run (restarts included), then it is stopped: exit 124")
    )
    restarts: int = field(default=0, metadata=_help("start the whole job again after a failure, up to this many times"))


@dataclass
class ExportSpec:
    """The names each resolved number is exported under in the script's environment."""

    rank: List[str] = field(default_factory=lambda: ["RANK"], metadata=_help("names the global rank is set as"))
    local_rank: List[str] = field(default_factory=lambda: ["LOCAL_RANK"], metadata=_help("... the local rank"))
    world_size: List[str] = field(default_factory=lambda: ["WORLD_SIZE"], metadata=_help("... the world size"))
    local_world_size: List[str] = field(
        default_factory=lambda: ["LOCAL_WORLD_SIZE", "LOCAL_SIZE"], metadata=_help("... (LOCAL_SIZE: DeepSpeed's)")
    )
    node_rank: List[str] = field(
        default_factory=lambda: ["NODE_RANK", "GROUP_RANK"], metadata=_help("... (Lightning and torch read these)")
    )


@dataclass
class MasterSpec:
    """The rendezvous address torch.distributed reads as MASTER_ADDR / MASTER_PORT."""

    addr: Optional[str] = field(default=None, metadata=_help("MASTER_ADDR unless the environment already has one"))
    port: Optional[int] = field(default=None, metadata=_help("MASTER_PORT unless the environment already has one"))
    default_port: int = field(default=29500, metadata=_help("port when no job id is known (torch's default)"))
    port_base: int = field(default=20000, metadata=_help("with a job id: port = port_base + job id % port_span"))
    port_span: int = field(default=10000, metadata=_help("kept below Linux's ephemeral range (32768-60999)"))


@dataclass
class LogSpec:
    """What ds-helper says on stderr before it becomes the script."""

    all_ranks: bool = field(default=False, metadata=_help("log the command on every rank, not only rank 0"))
    quiet: bool = field(default=False, metadata=_help("log nothing except errors"))
    dir: Optional[str] = field(
        default=None,
        metadata=_help("send each rank's stdout/stderr to files in this folder (created if missing)", path=FOLDER),
    )
    out: str = field(default="rank-{rank}.out", metadata=_help("stdout file name; {rank} {local_rank} {node_rank}"))
    err: str = field(default="rank-{rank}.err", metadata=_help("stderr file name; same placeholders"))
    tee: bool = field(
        default=False, metadata=_help("also show the output, prefixed, through a small supervising process")
    )
    prefix: str = field(default="[{rank}] ", metadata=_help("line prefix of log.tee and log.label; same placeholders"))
    grace: float = field(
        default=30.0, metadata=_help("seconds ranks get after a stop (signal, failure, time limit) before SIGKILL")
    )
    label: bool = field(
        default=False, metadata=_help("a job ds-helper starts: each output line labelled with its rank (log.prefix)")
    )
    show: Optional[List[int]] = field(
        default=None, metadata=_help("a local job: the ranks whose output is shown (log.dir keeps every rank's)")
    )


@dataclass
class Config:
    """The whole composed config: what ``--cfg job`` prints."""

    description: str = field(default="", metadata=_help("what a recipe is for: one line shown by --list-recipes"))
    launcher: LauncherSpec = field(
        default_factory=LauncherSpec,
        metadata=_help("the process manager: a group, choose with launcher=NAME (options above)", list_keys=False),
    )
    bind: BindSpec = field(
        default_factory=BindSpec, metadata=_help("binding: a group, choose with bind=NAME (options above)")
    )
    job: JobSpec = field(
        default_factory=JobSpec, metadata=_help("the shape of a job ds-helper starts itself (docs/jobs.md)")
    )
    script: Optional[str] = field(
        default=None, metadata=_help("the script to run (or the module with module=true)", path=FILE)
    )
    args: List[str] = field(default_factory=list, metadata=_help("script arguments; those after -- are appended"))
    module: bool = field(default=False, metadata=_help("run the script as a module: python -m SCRIPT"))
    no_python: bool = field(default=False, metadata=_help("exec SCRIPT itself (looked up on PATH), no interpreter"))
    python: Optional[str] = field(
        default=None, metadata=_help("interpreter (default: the one running ds-helper)", path=FILE)
    )
    unbuffered: bool = field(default=True, metadata=_help("pass -u to the interpreter, as DeepSpeed does"))
    env: Dict[str, Optional[str]] = field(
        default_factory=dict, metadata=_help("variables to set for the script (null unsets); env.NAME=VALUE")
    )
    export: ExportSpec = field(
        default_factory=ExportSpec, metadata=_help("the names each rank number is exported under")
    )
    master: MasterSpec = field(default_factory=MasterSpec, metadata=_help("MASTER_ADDR and MASTER_PORT"))
    log: LogSpec = field(default_factory=LogSpec, metadata=_help("what ds-helper logs, and the rank's output files"))
    dry_run: bool = field(default=False, metadata=_help("print what would run and every env change; start nothing"))
    run_mode: str = field(
        default="exec",
        metadata=_help(
            "exec: become the script; inprocess: run a Python script in ds-helper's interpreter when "
            "the rules allow (one interpreter start less; docs/design.md)"
        ),
    )
    die_with_manager: bool = field(
        default=True,
        metadata=_help("SIGKILL the script if the manager that started it dies (no orphans; never standalone)"),
    )


def key_fields(cls: type = Config, prefix: str = "") -> Dict[str, Field[Any]]:
    """Every key of a schema class (nested sections walked: ``log.dir``) and its field, in the schema's order.

    A section comes first and then its keys, except a group whose keys are per-option data (``launcher``):
    that comes alone. What --help lists and Tab completes.
    """
    keys: Dict[str, Field[Any]] = {}
    for item in fields(cls):
        keys[prefix + item.name] = item
        nested = item.default_factory() if callable(item.default_factory) else None
        if is_dataclass(nested) and item.metadata.get("list_keys", True):
            keys.update(key_fields(type(nested), f"{prefix}{item.name}."))
    return keys


def key_help(cls: type = Config, prefix: str = "") -> Dict[str, str]:
    """Every key of a schema class with its one-line help (``key_fields``)."""
    return {name: item.metadata.get("help", "") for name, item in key_fields(cls, prefix).items()}


__all__ = [
    "RANK_FIELDS",
    "BindSpec",
    "Config",
    "ExportSpec",
    "ExitCodesSpec",
    "HostSource",
    "JobSpec",
    "LauncherSpec",
    "LogSpec",
    "MasterSpec",
    "StartSpec",
    "key_fields",
    "key_help",
]
