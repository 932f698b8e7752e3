"""The README's commands work and the documentation's links lead somewhere.

**Commands.** Every line of a fenced code block of README.md tagged ```bash, ```sh or ```shell is a command
(indented code, other languages and prose are not): a trailing ``\\`` joins a line with the next, ``#`` starts a
comment (as in the shell: ``shlex`` with ``comments=True``), blank and comment-only lines are skipped, and leading
``NAME=value`` words are environment variables. Each command is dry-run by its kind, offline and without writing
anything:

* ``python train.py | evaluate.py | mine.py ...``: run with Hydra's ``--cfg all --resolve`` added (Hydra composes
  the config, resolves every interpolation, prints it and runs nothing; ``all`` includes the ``hydra`` keys such as
  the launcher's), so an unknown key, a misspelt group choice or a malformed override fails. Hydra refuses
  ``--cfg`` together with ``-m`` ("Only one of --run, --multirun, --cfg ... can be specified"), so a multirun line
  is checked as its first job: ``-m`` dropped and each sweep override (``a=1,2``, ``range(...)``, ``choice(...)``)
  replaced by its first value, using Hydra's own override parser. A ``--cfg`` already on the line is replaced.
* ``python report.py ...``: ``python report.py --help`` must succeed and list every ``--option`` the line uses
  (the line's directories are placeholders, and a real report would write files into them).
* ``make TARGET ...``: ``make -n TARGET ...`` (prints the recipe, runs nothing) must succeed, so the target exists.
* Anything else fails ``test_every_readme_command_is_checked``: add a kind here, or keep it out of the README's
  bash blocks.

**Placeholders.** A word in angle brackets (``<run>``, ``<date>``) stands for a run directory; each must be a key
of ``PLACEHOLDERS``, whose value is substituted before the dry run (``--cfg`` reads no path, ``--help`` none
either). An unknown placeholder fails, naming it.

**Links.** Every relative Markdown link of README.md and docs/*.md (outside code) must name an existing file, and
its ``#anchor``, if any, a heading of the target page (GitHub's heading ids).

The train/evaluate/mine checks share one Python process (``_DRIVER``: the scripts' imports take seconds, paid
once) and, with the report check, are marked ``slow``; the rest of the file takes about a second.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

HYDRA_SCRIPTS = ("train.py", "evaluate.py", "mine.py")
REPORT_SCRIPT = "report.py"
# what each placeholder of the README stands for: a run directory's name (outputs/train/<run>) and a sweep's
# (multirun/train/<date>), in Hydra's format (conf/hydra/default.yaml)
PLACEHOLDERS = {"<run>": "2000-01-01_00-00-00", "<date>": "2000-01-01_00-00-00"}
MAX_README_LINES = 150

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
_PLACEHOLDER = re.compile(r"<[^<>\s]+>")
_ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One README command: where it is, what it says, and its words after placeholder substitution."""

    line: int
    text: str
    env: tuple[tuple[str, str], ...]
    words: tuple[str, ...]
    unknown_placeholders: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> str:
        w = self.words
        if len(w) >= 2 and w[0] in ("python", "python3") and w[1] in HYDRA_SCRIPTS:
            return "hydra"
        if len(w) >= 2 and w[0] in ("python", "python3") and w[1] == REPORT_SCRIPT:
            return "report"
        if len(w) >= 2 and w[0] == "make":
            return "make"
        return "unknown"

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def fenced_blocks(text: str, languages: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """The fenced code blocks tagged with one of ``languages``: (line number of the first content line, lines)."""
    blocks: list[tuple[int, list[str]]] = []
    block: tuple[str, str, int, list[str]] | None = None  # fence, language, first line, lines
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if block is None:
            if match:
                block = (match.group(1), match.group(2), number + 1, [])
        elif match and match.group(1) == block[0] and not match.group(2):
            if block[1] in languages:
                blocks.append((block[2], block[3]))
            block = None
        else:
            block[3].append(line)
    return blocks


def readme_commands(path: Path = README) -> list[Command]:
    commands: list[Command] = []
    for start, lines in fenced_blocks(path.read_text(encoding="utf-8"), ("bash", "sh", "shell")):
        pending, pending_line = "", 0
        for offset, raw in enumerate(lines):
            if not pending:
                pending_line = start + offset
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            source = (pending + raw).strip()
            pending = ""
            words = shlex.split(source, comments=True)
            if not words:
                continue
            env: list[tuple[str, str]] = []
            while words and _ENV_WORD.match(words[0]):
                name, value = words.pop(0).split("=", 1)
                env.append((name, value))
            unknown = [p for w in words for p in _PLACEHOLDER.findall(w) if p not in PLACEHOLDERS]
            words = [_PLACEHOLDER.sub(lambda m: PLACEHOLDERS.get(m.group(), m.group()), w) for w in words]
            text = shlex.split(source, comments=True)
            commands.append(
                Command(pending_line, " ".join(text), tuple(env), tuple(words), tuple(dict.fromkeys(unknown)))
            )
    return commands


COMMANDS = readme_commands()


def _by_kind(kind: str) -> list[Command]:
    return [c for c in COMMANDS if c.kind == kind]


def _params(kind: str) -> list:
    return [pytest.param(c, id=f"L{c.line}:{' '.join(c.words[1:])[:80]}") for c in _by_kind(kind)]


def first_job(overrides: list[str]) -> list[str]:
    """A multirun's overrides as its first job: each sweep replaced by its first value (Hydra's own parser)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    single = []
    for override in parser.parse_overrides(overrides):
        if override.is_sweep_override():
            single.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            single.append(override.input_line)
    return single


def compose_argv(command: Command) -> list[str]:
    """``python <script> <overrides> --cfg all --resolve`` for a train/evaluate/mine command."""
    script, args = command.words[1], list(command.words[2:])
    multirun = any(a in ("-m", "--multirun") for a in args)
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in ("-m", "--multirun", "--resolve"):
            pass
        elif arg in ("--cfg", "-c"):
            skip_next = True
        else:
            kept.append(arg)
    flags = [a for a in kept if a.startswith("-")]
    assert not flags, f"{command}: options other than -m / --cfg are not checked here: {flags}"
    if multirun:
        kept = first_job(kept)
    return [sys.executable, script, *kept, "--cfg", "all", "--resolve"]


def _env(command: Command | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **dict(command.env if command else ()),
    }


# Runs each job's script as ``python <script> <args>`` would (``runpy`` as ``__main__``, ``sys.argv`` set, the
# job's environment variables set), one after the other in one process: the scripts' imports (Lightning: seconds)
# are paid once instead of once per command. Hydra's exit status (``sys.exit``) and output are kept
# per job; Hydra's global state is cleared between jobs, as a new process would start without it.
_DRIVER = r"""
import contextlib, io, json, os, runpy, sys, traceback
from hydra.core.global_hydra import GlobalHydra

jobs = json.load(open(sys.argv[1]))
results = []
for job in jobs:
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = job["argv"]
    os.environ.update(job["env"])
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(job["argv"][0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        code = 1
        err.write(traceback.format_exc())
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, open(sys.argv[2], "w"))
"""


@dataclass
class DryRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def dry_run_all(commands: list[Command], workdir: Path) -> dict[Command, DryRun | Exception]:
    """``--cfg all --resolve`` of every command, in one Python process (see ``_DRIVER``)."""
    results: dict[Command, DryRun | Exception] = {}
    jobs: list[tuple[Command, list[str]]] = []
    for command in commands:
        try:
            argv = compose_argv(command)
        except Exception as exc:  # e.g. an override Hydra's parser rejects: reported by that command's test
            results[command] = exc
            continue
        jobs.append((command, [str(REPO / argv[1]), *argv[2:]]))
    if jobs:
        spec, out = workdir / "jobs.json", workdir / "results.json"
        spec.write_text(json.dumps([{"argv": argv, "env": dict(c.env)} for c, argv in jobs]))
        proc = subprocess.run(
            [sys.executable, "-c", _DRIVER, str(spec), str(out)],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0 and out.is_file(), f"the dry-run driver failed:\n{proc.stderr[-3000:]}"
        for (command, argv), result in zip(jobs, json.loads(out.read_text()), strict=True):
            results[command] = DryRun(argv=[Path(argv[0]).name, *argv[1:]], **result)
    return results


@pytest.fixture(scope="module")
def composed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The dry runs of the train/evaluate/mine commands whose tests were selected, run once for all of them."""
    selected = [
        item.callspec.params["command"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and isinstance(item.callspec.params.get("command"), Command)
        and item.callspec.params["command"].kind == "hydra"
    ]
    return dry_run_all(list(dict.fromkeys(selected)), tmp_path_factory.mktemp("readme"))


@pytest.fixture(scope="module")
def report_help() -> subprocess.CompletedProcess | None:
    """``python report.py --help``, once for every report command (None: there is no report.py)."""
    if not (REPO / REPORT_SCRIPT).is_file():
        return None
    return subprocess.run(
        [sys.executable, REPORT_SCRIPT, "--help"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# ---------------------------------------------------------------------------------------------------- commands


def test_the_readme_has_commands_of_every_kind() -> None:
    kinds = {c.kind for c in COMMANDS}
    assert {"hydra", "report", "make"} <= kinds, f"found only {sorted(kinds)} in README.md's bash blocks"
    assert any(c.words[:2] == ("make", "train") for c in COMMANDS), "the quickstart's `make train` is missing"
    assert any(c.words[:2] == ("make", "test") for c in COMMANDS), "the quickstart's `make test` is missing"


def test_every_readme_command_is_checked() -> None:
    unknown = [str(c) for c in _by_kind("unknown")]
    assert not unknown, (
        "README.md has commands this test cannot dry-run (add a kind to tests/test_readme.py, or move them out of "
        "the README's bash blocks):\n" + "\n".join(unknown)
    )


def test_every_placeholder_is_known() -> None:
    unknown = [f"{c} -> {', '.join(c.unknown_placeholders)}" for c in COMMANDS if c.unknown_placeholders]
    assert not unknown, (
        "README.md commands use placeholders that tests/test_readme.py's PLACEHOLDERS does not define:\n"
        + "\n".join(unknown)
    )


def test_the_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines; move details into docs/ (at most {MAX_README_LINES})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", _params("hydra"))
def test_readme_command_composes(command: Command, composed: dict) -> None:
    assert not command.unknown_placeholders, f"{command}: unknown placeholders {command.unknown_placeholders}"
    result = composed[command]
    if isinstance(result, Exception):
        raise AssertionError(f"{command}\ncould not be dry-run: {result}") from result
    assert result.returncode == 0, (
        f"{command}\ndoes not compose (`python {shlex.join(result.argv)}`, exit {result.returncode}):\n"
        f"{result.stderr[-3000:]}"
    )
    assert "hydra:" in result.stdout and "task_name:" in result.stdout, f"{command}: --cfg printed no config"


@pytest.mark.slow
@pytest.mark.parametrize("command", _params("report"))
def test_readme_report_command_has_its_options(
    command: Command, report_help: subprocess.CompletedProcess | None
) -> None:
    assert not command.unknown_placeholders, f"{command}: unknown placeholders {command.unknown_placeholders}"
    assert report_help is not None, f"{command}: {REPORT_SCRIPT} does not exist in the repository root"
    assert report_help.returncode == 0, (
        f"{command}: `python {REPORT_SCRIPT} --help` failed:\n{report_help.stderr[-3000:]}"
    )
    options = [w.split("=", 1)[0] for w in command.words[2:] if w.startswith("--")]
    missing = [
        o
        for o in options
        if not re.search(rf"(^|[\s,\[]){re.escape(o)}(?=[\s,\]=]|$)", report_help.stdout, re.M)
    ]
    assert not missing, (
        f"{command}: `{REPORT_SCRIPT} --help` lists no option {missing}:\n{report_help.stdout}"
    )


@pytest.mark.parametrize("command", _params("make"))
def test_readme_make_target_exists(command: Command) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", *command.words[1:]],
        cwd=REPO,
        env=_env(command),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}: `make -n` failed (exit {result.returncode}):\n{result.stderr}"


# ------------------------------------------------------------------------------------------------------- links

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _prose_lines(text: str, drop_code_spans: bool = True) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their numbers (and without inline code spans)."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence and not match.group(2):
                fence = None
            continue
        if fence is None:
            out.append((number, _CODE_SPAN.sub("", line) if drop_code_spans else line))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped (letters, digits, ``_``, ``-`` and spaces kept),
    spaces as hyphens."""
    text = re.sub(r"`", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), drop_code_spans=False):
        match = _HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def broken_links(page: Path) -> list[str]:
    broken: list[str] = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for match in _LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(REPO)}:{number}: ({target})"
            if not resolved.exists():
                shown = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved
                broken.append(f"{where}: no file {shown}")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{where}: no heading #{fragment} in {resolved.relative_to(REPO)}")
    return broken


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_anchor_rule_matches_github() -> None:
    assert github_anchor("GPU (one H100, 2026-11-25)") == "gpu-one-h100-2026-11-25"
    assert github_anchor("Config groups (`conf/`)") == "config-groups-conf"
    assert (
        github_anchor("The planner at 10^6 and 10^7 ids (issue 25)")
        == "the-planner-at-106-and-107-ids-issue-25"
    )
    assert github_anchor("Hard negatives (issue 13, item 7)") == "hard-negatives-issue-13-item-7"


_TEST_REFERENCE = re.compile(r"((?:tests/[\w/]+/)?(test_\w+\.py))(?:::(\w+))?")


def test_every_test_the_docs_name_exists() -> None:
    """docs/reliability.md and the other pages name the tests that check each promise (``test_x.py::test_y``, or
    a path under tests/): each named file and function exists, so a renamed or moved test cannot leave the docs
    pointing at nothing."""
    files = {p.name for p in (REPO / "tests").rglob("test_*.py")}
    defined: dict[str, set[str]] = {}
    for path in (REPO / "tests").rglob("*.py"):
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M):
            defined.setdefault(name, set()).add(path.name)
    missing = []
    for doc in [README, *DOCS]:
        for path, base, function in _TEST_REFERENCE.findall(doc.read_text()):
            if path.startswith("tests/") and not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
            elif base not in files:
                missing.append(f"{doc.name}: {base}")
            elif function and base not in defined.get(function, set()):
                missing.append(f"{doc.name}: {base}::{function}")
    assert missing == []
