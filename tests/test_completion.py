"""Tab completion, typed into real bash, zsh and fish in a real terminal (tmux): what the command line becomes.

Each shell starts clean (no rc file), turns completion on with the line the README gives, and then a partial
word is typed, Tab pressed, and a marker typed after it: once the marker is on the screen the shell has applied
the completion, and the text before it is what Tab made of the line (a trailing space included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
from conftest import DS_HELPER, ds, run
from ds_helper.compose.complete import SHELLS as COMPLETED_SHELLS
from ds_helper.compose.config import group_options, hydra_context
from ds_helper.compose.recipes import GROUPS, available
from ds_helper.compose.schema import key_help
from ds_helper.rank.argv import DEEPSPEED_FLAGS, FLAGS

PROMPT = "@@ "
MARKER = "QZ"  # typed after Tab: no completion ends in it, so its arrival means the shell is done
TIMEOUT = 20.0  # seconds for the screen to show what was typed, generous for a loaded 2-CPU machine
SHELLS = ("bash", "zsh", "fish")

# How each shell starts clean and turns completion on (the README's line for it).
START = {
    "bash": (["bash", "--norc", "--noprofile"], f"PS1='{PROMPT}'; " + 'eval "$(ds-helper --completion bash)"'),
    "zsh": (
        ["zsh", "-f"],
        f"PS1='{PROMPT}'; autoload -Uz compinit && compinit -u -D && " + 'eval "$(ds-helper --completion zsh)"',
    ),
    "fish": (
        ["fish", "--no-config"],
        f"function fish_prompt; printf '{PROMPT}'; end; set -g fish_autosuggestion_enabled 0; "
        "ds-helper --completion fish | source",
    ),
}
EXPORT = {"bash": "export {}={}", "zsh": "export {}={}", "fish": "set -gx {} {}"}


class Terminal:
    """One shell in a tmux pane of its own tmux server: type, press Tab, read the line back."""

    def __init__(self, shell: str, home: Path, env: Dict[str, str]) -> None:
        self.socket = str(home / f"tmux-{shell}")
        argv, turn_on = START[shell]
        self.shell = shell
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "-c", str(home), *argv, env=env)
        self._tmux("send-keys", "-l", turn_on)
        self._tmux("send-keys", "Enter")
        self._tmux("send-keys", "-l", "clear")
        self._tmux("send-keys", "Enter")
        # Typed before the line editor reads, keys are echoed by the terminal itself: wait for a cleared screen
        # holding the prompt alone.
        self._wait(lambda lines: lines == [PROMPT.rstrip()], "its first prompt")

    def _tmux(self, *args: str, env: Dict[str, str] | None = None) -> str:
        result = subprocess.run(["tmux", "-S", self.socket, *args], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screen(self) -> List[str]:
        return self._tmux("capture-pane", "-p").splitlines()

    def line_after(self, typed: str, *keys: str) -> str:
        """Clear the line, type ``typed``, press ``keys`` (Tab), type the marker: the line before the marker."""
        self._tmux("send-keys", "C-u")
        self._tmux("send-keys", "-l", typed)
        for key in keys:
            self._tmux("send-keys", key)
        self._tmux("send-keys", "-l", MARKER)
        lines = self._wait(lambda lines: bool(lines) and lines[-1].endswith(MARKER), repr(typed + MARKER))
        return lines[-1][len(PROMPT) : -len(MARKER)]

    def _wait(self, done: Callable[[List[str]], bool], what: str) -> List[str]:
        """The screen's prompt lines (or its non-empty lines, before any) once ``done`` holds for them."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            screen = self.screen()
            lines = [line for line in screen if line.startswith(PROMPT)] or [line for line in screen if line]
            if done(lines):
                return lines
            assert time.monotonic() < deadline, f"{self.shell} never showed {what}: {screen}"
            time.sleep(0.05)

    def tab(self, typed: str) -> str:
        return self.line_after(typed, "Tab")

    def run(self, command: str) -> None:
        self._tmux("send-keys", "C-u")
        self._tmux("send-keys", "-l", command)
        self._tmux("send-keys", "Enter")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shells' folder: a script, a hostfile, a plan, a log folder; a team's recipes and a site's launcher,
    beside a recipe path entry that is a file, one that is missing, and a site launcher file that is not YAML."""
    home = tmp_path_factory.mktemp("completion")
    for name in ("train.py", "hosts.txt", "plan.json", "not-a-folder"):
        (home / name).write_text("")
    (home / "runs").mkdir()
    (home / "team").mkdir()
    (home / "team" / "ourteam_cpu.yaml").write_text("description: our CPU nodes\n")
    (home / "site").mkdir()
    (home / "site" / "sitempi.yaml").write_text("name: sitempi\n")
    (home / "broken").mkdir()
    (home / "broken" / "zbroken.yaml").write_text(": : [\n")
    return home


def shell_env(home: Path) -> Dict[str, str]:
    """As ``env -i`` would leave it (no TMUX of an outer tmux, no PROMPT_COMMAND, no rc folders), plus the paths."""
    return {
        "HOME": str(home),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "PATH": f"{os.path.dirname(DS_HELPER)}:/usr/bin:/bin",
        "DS_HELPER_RECIPE_PATH": f"{home / 'team'}:{home / 'not-a-folder'}:{home / 'missing'}",
        "DS_HELPER_LAUNCHER_PATH": f"{home / 'broken'}:{home / 'site'}",
    }


@pytest.fixture(scope="module")
def terminals(home: Path) -> Iterator[Dict[str, Terminal]]:
    """One terminal per shell, started on first use and closed at the end of the module."""
    started: Dict[str, Terminal] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, shell: str) -> Terminal:
            if shutil.which(shell) is None or shutil.which("tmux") is None:
                pytest.fail(f"{shell} and tmux are needed: .ci/install installs them")
            started[shell] = Terminal(shell, home, shell_env(home))
            return started[shell]

    yield Lazy()
    for terminal in started.values():
        terminal.close()


# (typed, what Tab makes of it): a trailing space means the word is finished.
CASES = [
    ("ds-helper launcher=mpi", "ds-helper launcher=mpich "),
    ("ds-helper bind.co", "ds-helper bind.cores="),
    ("ds-helper job.ranks_", "ds-helper job.ranks_per_node="),
    ("ds-helper bind.cores=0-31:2 bind.phy", "ds-helper bind.cores=0-31:2 bind.physical="),
    ("ds-helper bind=num", "ds-helper bind=numa "),
    ("ds-helper ~en", "ds-helper ~env."),
    ("ds-helper +job.no", "ds-helper +job.nodes="),
    ("ds-helper log.tee=t", "ds-helper log.tee=true "),
    ("ds-helper launcher=site", "ds-helper launcher=sitempi "),  # $DS_HELPER_LAUNCHER_PATH
    ("ds-helper recipe=ourt", "ds-helper recipe=ourteam_cpu "),  # $DS_HELPER_RECIPE_PATH
    ("ds-helper recipe=deepsp", "ds-helper recipe=deepspeed_mpich "),  # shipped
    ("ds-helper job.hostfile=ho", "ds-helper job.hostfile=hosts.txt "),
    ("ds-helper log.dir=r", "ds-helper log.dir=runs/"),
    ("ds-helper script=tr", "ds-helper script=train.py "),
    ("ds-helper --save-pl", "ds-helper --save-plan "),
    ("ds-helper --plan pl", "ds-helper --plan plan.json "),
    ("ds-helper --plan=pl", "ds-helper --plan=plan.json "),
    ("ds-helper --completion fi", "ds-helper --completion fish "),
    ("ds-helper --cfg=j", "ds-helper --cfg=job "),
    ("ds-helper --launcher op", "ds-helper --launcher openmpi "),
    ("ds-helper launcher=local tra", "ds-helper launcher=local train.py "),  # the script
    # After the script (or --), the words are the script's: the shell's own file names, no keys.
    ("ds-helper train.py ho", "ds-helper train.py hosts.txt "),
    ("ds-helper train.py launcher=mpi", "ds-helper train.py launcher=mpi"),
    ("ds-helper -- bind.co", "ds-helper -- bind.co"),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("typed, expected", CASES)
def test_tab_completes_the_word_at_the_cursor(terminals: Dict[str, Terminal], shell: str, typed: str, expected: str):
    if shell == "zsh" and typed.rpartition(" ")[2].startswith("~"):
        expected = typed  # zsh completes a word that starts with ~ as a home folder (-tilde-), for any command
    assert terminals[shell].tab(typed) == expected


@pytest.mark.parametrize("shell", SHELLS)
def test_recipes_and_launchers_are_read_at_the_moment_of_the_tab(
    terminals: Dict[str, Terminal], home: Path, shell: str
) -> None:
    terminal = terminals[shell]
    later = home / f"later-{shell}"
    later.mkdir()
    (later / f"late_{shell}.yaml").write_text("description: added after the shell started\n")
    terminal.run(EXPORT[shell].format("DS_HELPER_RECIPE_PATH", later))
    try:
        assert terminal.tab("ds-helper recipe=late_") == f"ds-helper recipe=late_{shell} "
    finally:
        terminal.run(EXPORT[shell].format("DS_HELPER_RECIPE_PATH", shell_env(home)["DS_HELPER_RECIPE_PATH"]))
    assert terminal.tab("ds-helper recipe=ourt") == "ds-helper recipe=ourteam_cpu "


@pytest.mark.parametrize("shell", SHELLS)
def test_broken_recipe_path_and_site_launcher_print_nothing_into_the_line(
    terminals: Dict[str, Terminal], shell: str
) -> None:
    """The recipe path holds a file and a missing folder, the launcher path a file that is not YAML."""
    terminal = terminals[shell]
    assert terminal.tab("ds-helper launcher=zbr") == "ds-helper launcher=zbroken "
    assert terminal.tab("ds-helper recipe=ourt") == "ds-helper recipe=ourteam_cpu "
    screen = "\n".join(terminal.screen())
    assert "error" not in screen and "Traceback" not in screen, screen


def test_the_callback_is_silent_and_exits_0_whatever_it_is_given(home: Path) -> None:
    env = shell_env(home)
    for words in (["recipe="], ["launcher="], ["--plan"], ["--check", "x", ""], ["--nosuch=", ""], ["~", ""], []):
        result = ds("--complete-words", *words, env=env, cwd=home)
        assert (result.returncode, result.stderr) == (0, ""), (words, result)


def answer(*words: str, env: Dict[str, str] | None = None) -> List[str]:
    result = ds("--complete-words", *words, env=env)
    assert result.returncode == 0 and result.stderr == "", result
    return result.stdout.splitlines()[2:]


def test_keys_are_the_schemas_one_level_at_a_time() -> None:
    """Every key --help lists is reached by Tab: its section first (``job.``), then the key (``job.ranks=``)."""
    keys = key_help()
    sections = {key.rpartition(".")[0] for key in keys if "." in key}
    reached = set()
    for word in answer(""):
        if word.endswith("."):
            reached.update(w.removesuffix("=") for w in answer(word) if w.endswith("="))
        else:
            reached.add(word.removesuffix("="))
    # A section is not a key of its own unless it is a group too (bind=numa); env.NAME takes any name.
    assert reached == (set(keys) - sections - {"env"}) | set(GROUPS) | {"recipe"}
    assert "env." in answer("e")


def test_group_options_and_recipes_are_what_composing_sees(home: Path) -> None:
    env = shell_env(home)
    env["DS_HELPER_LAUNCHER_PATH"] = str(home / "site")  # Hydra refuses the broken file; completion ignores it
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with hydra_context():
            launchers, binds = group_options("launcher"), group_options("bind")
        recipes = sorted(available())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert answer("launcher=", env=env) == [f"launcher={name}" for name in launchers]
    assert answer("bind=", env=env) == [f"bind={name}" for name in binds]
    assert answer("recipe=", env=env) == [f"recipe={name}" for name in recipes]


def test_completion_of_an_unknown_shell_is_one_error_line() -> None:
    result = ds("--completion", "tcsh")
    assert result.returncode == 2 and result.stdout == ""
    expected = "--completion tcsh: expected --completion bash, --completion zsh or --completion fish"
    assert result.stderr == f"ds-helper: error: {expected}\n"


def test_flags_are_the_table_help_prints() -> None:
    offered = answer("-")
    assert offered == sorted(name for row in (*FLAGS, *DEEPSPEED_FLAGS) for name in row[0])
    help_text = ds("--help").stdout
    assert all(name in help_text for name in offered), help_text
    assert answer("--completion", "") == list(COMPLETED_SHELLS) == list(SHELLS)


def test_a_tab_imports_no_hydra_omegaconf_or_yaml(home: Path) -> None:
    """One Tab of every kind and the script itself, in one interpreter: what composing needs is never loaded."""
    probe = (
        "import sys; from ds_helper.cli import main\n"
        "for words in (['recipe='], ['launcher='], ['bind='], ['bind.'], ['-'], ['log.dir=']):\n"
        "    main(['--complete-words', *words])\n"
        "main(['--completion', 'bash'])  # run by every new shell\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'yaml')))"
    )
    result = run([sys.executable, "-c", probe], env=shell_env(home), cwd=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "", result.stdout
