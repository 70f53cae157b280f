"""The documentation's links and flags: every relative link in README.md and docs/ resolves (file and
#anchor), and every `--flag` a page names beside a command exists in that command's parser.

Fast and TensorFlow-free: the parsers are built by each command's ``build_parser()``, which imports
no TensorFlow (every ``--help`` is instant for the same reason).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "results" / "README.md",
         *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[|\]|\([^)]*\)", lambda m: "" if m.group(0)[0] != "(" else m.group(0), heading)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = github_slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return out


def links_of(page: Path):
    in_code = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if not target.startswith(("http://", "https://", "mailto:")):
                yield number, target


def test_github_slug():
    assert github_slug(" Training on an insightface pack (`train.rec`) and its `.bin` sets") == \
        "training-on-an-insightface-pack-trainrec-and-its-bin-sets"
    assert github_slug(" Every backbone with `train.py --data`'s defaults") == \
        "every-backbone-with-trainpy---datas-defaults"
    assert github_slug(" Choosing `best.keras`") == "choosing-bestkeras"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for number, target in links_of(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"line {number}: {target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest):
            broken.append(f"line {number}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


# --- flags -------------------------------------------------------------------------------------------

# How the docs spell each command -> the module whose parser it runs.
COMMANDS = [
    (r"align/align_lfw\.py|-m align\.align_lfw", "align.align_lfw"),
    (r"-m tfrecords\.build", "tfrecords.build"),
    (r"-m tfrecords\.verify", "tfrecords.verify"),
    (r"(?<![\w/.])train\.py", "train"),
    (r"(?<![\w/.])evaluate\.py", "evaluate"),
    (r"(?<![\w/.])verify\.py", "verify"),
    (r"(?<![\w/.])identify\.py", "identify"),
    (r"(?<![\w/.])export_onnx\.py", "export_onnx"),
    (r"(?<![\w/.])export\.py", "export"),
    (r"-m evaluation\.binset", "evaluation.binset"),
    (r"-m evaluation\.make_pairs", "evaluation.make_pairs"),
    (r"-m training\.curves", "training.curves"),
    (r"-m losses\.plot_margins", "losses.plot_margins"),
    (r"-m recipes\.(\w+)|recipes/(\w+)\.py", "recipes.{}"),
    (r"-m benchmarks\.(\w+)|benchmarks/(\w+)\.py", "benchmarks.{}"),
]
COMMAND = re.compile("|".join(f"(?:{pattern})" for pattern, _ in COMMANDS))
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w*-])")


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser_of(module_name):
    """The command's argparse parser: its ``build_parser()``, else the parser its ``main``/``parse_args``
    builds (caught as it parses, before the command does anything)."""
    import argparse
    import sys
    module = importlib.import_module(module_name)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
    if entry is None:
        return None  # a library module the docs name by its file (benchmarks/real_step.py), no command
    original, argv = argparse.ArgumentParser.parse_args, sys.argv

    def capture(self, *args, **kwargs):
        raise _Captured(self)
    argparse.ArgumentParser.parse_args = capture
    sys.argv = [module_name]
    try:
        try:
            entry([])
        except TypeError:
            entry()
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args, sys.argv = original, argv
    raise AssertionError(f"{module_name} built no parser")


_OPTIONS: dict[str, set[str]] = {}


def options_of(module_name) -> set[str]:
    """Every option string of the command, its subcommands' included."""
    if module_name not in _OPTIONS:
        import argparse
        parser = _parser_of(module_name)
        out, todo = set(), [parser] if parser is not None else []
        while todo:
            parser = todo.pop()
            for action in parser._actions:
                out.update(action.option_strings)
                if isinstance(action, argparse._SubParsersAction):
                    todo.extend(action.choices.values())
        _OPTIONS[module_name] = out
    return _OPTIONS[module_name]


def module_of(match: re.Match) -> str:
    text = match.group(0)
    for pattern, module in COMMANDS:
        m = re.fullmatch(pattern, text)
        if m:
            return module.format(*[g for g in m.groups() if g])
    raise AssertionError(text)


def _strip_quoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", text)


def command_lines(page: Path):
    """(line number, module, the flags that line gives the command): each command line of a code block
    (backslash continuations joined) and each inline `code span` that starts a command."""
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    in_code, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        spans = [line] if in_code else re.findall(r"`([^`]+)`", line)
        for span in spans:
            if in_code:
                if not pending:
                    start = number
                pending += " " + span
                if span.rstrip().endswith("\\"):
                    continue
                span, pending = pending, ""
            span = _strip_quoted(span.split(" #")[0])
            for part in re.split(r";|&&|\|", span):
                found = list(COMMAND.finditer(part))
                if found:
                    command = found[0]
                    flags = FLAG.findall(part[command.end():])
                    yield (start if in_code else number), module_of(command), flags


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_flags_exist(page):
    """A flag written after a command in a page is one that command's parser defines."""
    unknown = []
    for number, module, flags in command_lines(page):
        try:
            options = options_of(module)
        except ModuleNotFoundError as e:
            unknown.append(f"line {number}: no command module {module} ({e})")
            continue
        if options:
            unknown += [f"line {number}: {module} has no {flag}" for flag in flags if flag not in options]
    assert not unknown, f"{page.relative_to(ROOT)}:\n" + "\n".join(unknown)


def _all_documented_commands() -> set[str]:
    modules = set()
    for page in PAGES:
        modules |= {module_of(m) for m in COMMAND.finditer(page.read_text(encoding="utf-8"))}
    return modules


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_flags_named_in_prose_exist(page):
    """A `--flag` named anywhere in a page's prose is defined by one of the project's commands (which one
    the prose makes clear; command lines are checked against their own command above)."""
    known = set()
    for module in _all_documented_commands():
        try:
            known |= options_of(module)
        except ModuleNotFoundError:
            pass
    text = page.read_text(encoding="utf-8")
    named = set()
    for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL)):
        named.update(FLAG.findall(span))
    missing = sorted(named - known - PROSE_FLAGS_OF_OTHER_TOOLS)
    assert not missing, f"{page.relative_to(ROOT)} names flags no command has: {missing}"


# Flags of tools that are not this project's commands (pytest's, in the testing page).
PROSE_FLAGS_OF_OTHER_TOOLS = {"--maxprocesses", "--dist"}


# --- results ------------------------------------------------------------------------------------------

RESULT_PATH = re.compile(r"benchmarks/results/([A-Za-z0-9_{},]+)/([A-Za-z0-9_.{},]*)")


def _expand(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [x for alt in m.group(1).split(",") for x in _expand(text[:m.start()] + alt + text[m.end():])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_result_files_the_docs_name_exist(page):
    """`benchmarks/results/EXPERIMENT/FILE` (brace lists expanded) names a folder and file that exist."""
    missing = []
    for folder, name in RESULT_PATH.findall(page.read_text(encoding="utf-8")):
        for path in _expand(f"{folder}/{name.rstrip('.')}"):
            if not (ROOT / "benchmarks" / "results" / path).exists():
                missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names missing results: {missing}"


def test_results_index_lists_every_experiment():
    from benchmarks.results_index import experiment_folders
    index = (ROOT / "benchmarks" / "results" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| \[([^\]]+)\]\(", index, re.MULTILINE))
    assert listed == {folder.name for folder in experiment_folders()}, "rerun python -m benchmarks.results_index"


# --- the heads' defaults -----------------------------------------------------------------------------

# How docs/heads.md's table spells the options whose names it writes as symbols.
HEAD_OPTION_SPELLING = {"lambda_base": "base", "lambda_gamma": "γ", "lambda_power": "power", "lambda_min": "λ_min",
                        "lambda_g": "λ_g"}


def test_heads_page_defaults_are_the_registrys():
    """docs/heads.md's table of heads repeats each head's published defaults for the reader: every value
    there is the one losses.registry.HEADS holds (the one source), so the page cannot drift from it."""
    from losses.registry import HEADS

    rows = {}
    for line in (ROOT / "docs" / "heads.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`") if cells else ""
        if line.startswith("|") and name in HEADS:
            rows[name] = cells[2]
    assert set(rows) == set(HEADS), f"heads missing from the page: {sorted(set(HEADS) - set(rows))}"
    wrong = []
    for name, cell in rows.items():
        for option, value in HEADS[name].defaults.items():
            if value is None:   # off (sphereface_lambda: the annealed schedule)
                continue
            shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
            if not re.search(rf"(?<![\w]){re.escape(HEAD_OPTION_SPELLING.get(option, option))} {re.escape(shown)}"
                             rf"(?![\w.])", cell):
                wrong.append(f"{name}: {option} {shown} not in {cell!r}")
    assert not wrong, "\n".join(wrong)
