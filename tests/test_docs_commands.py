"""A documented command is a parsed command: every `neuro-caduceus ...`, `make ...` and `python -m ...` shown
in README.md and docs/ must exist, and every option a `neuro-caduceus` command uses (or `python -m
neuro_caduceus`, the form a Ray job runs) must be one of its options (checked against the real click app
behind the typer CLI)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from neuro_caduceus.docs_reference import commands

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "<"}
PLACEHOLDERS = {"...", "COMMAND"}
TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.M)


@dataclass(frozen=True)
class Snippet:
    where: str  # file:line
    text: str
    inline: bool = False  # an inline code span may name an option without its value


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(path: Path, root: Path = ROOT) -> list[Snippet]:
    """Shell lines of fenced code blocks (continuations joined) and inline code spans of one file."""
    text = path.read_text()
    rel = path.relative_to(root)
    found = []
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        joined, start = "", None
        for offset, line in enumerate(block.group(1).splitlines()):
            start = first + offset if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            found.append(Snippet(f"{rel}:{start}", joined + line))
            joined, start = "", None
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE.finditer(outside):
        line = outside.count("\n", 0, span.start()) + 1
        found.append(Snippet(f"{rel}:{line}", span.group(1), inline=True))
    return found


def tokens(snippet: Snippet) -> list[str]:
    try:
        return shlex.split(snippet.text, comments=True)
    except ValueError as err:
        raise AssertionError(f"{snippet.where}: not a shell line ({err}): {snippet.text}") from None


def invocations(words: list[str], program: str) -> list[list[str]]:
    """The argument lists following each `program` word, up to a shell separator outside brackets."""
    found = []
    for i, word in enumerate(words):
        if word != program and not word.endswith(f"/{program}"):
            continue
        args, depth = [], 0
        for word in words[i + 1:]:
            if depth == 0 and word in SEPARATORS:
                break
            depth += word.count("[") + word.count("(") - word.count("]") - word.count(")")
            args.append(word)
        found.append(args)
    return found


def cli_problems(args: list[str], group: click.Group, values: bool = True) -> list[str]:
    """Why `neuro-caduceus ARGS` would not parse: unknown command, unknown option, option without value
    (`values`). `COMMAND` and `...` stand for any command in prose."""
    group_options = {o for p in group.params if isinstance(p, click.Option) for o in p.opts}
    while args and args[0] in group_options:  # global options (--debug) stand before the command
        args = args[1:]
    if not args or args[0] in PLACEHOLDERS:
        return []
    if args[0].startswith("-"):
        return [f"unknown option {a}" for a in args if a.startswith("--") and a != "--help"]
    name, rest = args[0], [a.strip("[](){}") for a in args[1:]]
    cmd = group.commands.get(name)
    if cmd is None:
        return [f"no command {name!r} (commands: {', '.join(group.commands)})"]
    options = {o: p for p in cmd.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    problems = []
    for i, word in enumerate(rest):
        if not word.startswith("-") or word in ("-", "--help"):
            continue
        opt = word.split("=", 1)[0]
        if opt not in options:
            problems.append(f"{name} has no option {opt}")
            continue
        param = options[opt]
        takes_value = not param.is_flag and param.nargs != 0
        missing_value = i + 1 == len(rest) or rest[i + 1].startswith("--")
        if values and takes_value and "=" not in word and missing_value:
            problems.append(f"{name} {opt} needs a value")
    return problems


def documented(program: str, found: list[Snippet] | None = None) -> list[tuple[Snippet, list[str]]]:
    """Invocations in code blocks, and inline spans that start with the program (not messages quoting it);
    in the docs' snippets, or in `found`."""
    found = [s for path in doc_files() for s in snippets(path)] if found is None else found
    return [(s, args) for s in found if program in s.text
            and (not s.inline or s.text.split()[0].endswith(program))
            for args in invocations(tokens(s), program)]


def documented_cli(found: list[Snippet] | None = None) -> list[tuple[Snippet, list[str]]]:
    """`neuro-caduceus ARGS` and `python -m neuro_caduceus ARGS` (e.g. after `ray job submit ... --`)."""
    as_module = [(s, args[2:]) for s, args in documented("python", found)
                 if args[:2] == ["-m", "neuro_caduceus"]]
    return documented("neuro-caduceus", found) + as_module


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_links_point_at_files_that_exist():
    """mkdocs checks the links inside docs/; README.md sits outside the site, so it is checked here."""
    links = [m.group(1) for m in LINK.finditer((ROOT / "README.md").read_text()) if "://" not in m.group(1)]
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def make_targets() -> set[str]:
    return set(TARGET.findall((ROOT / "Makefile").read_text()))


def test_every_documented_neuro_caduceus_command_parses():
    found = documented_cli()
    group = commands()
    used = {args[0] for _, args in found if args and not args[0].startswith("-")}
    assert len(found) >= 20 and {"embed-cohort", "pilot", "pca"} <= used, "the extractor found too little"
    submitted = {args[0] for s, args in found if "ray job submit" in s.text and args}
    assert {"embed-cohort", "logo", "cca", "pilot", "pca", "residualize"} <= submitted, submitted
    problems = [f"{s.where}: {p}" for s, args in found for p in cli_problems(args, group, not s.inline)]
    assert not problems, "\n".join(problems)


def test_every_documented_make_target_exists():
    found = documented("make")
    targets = make_targets()
    named = [(s.where, args[0]) for s, args in found if args and not args[0].startswith("-")]
    assert {"demo", "test"} <= {t for _, t in named}
    missing = [f"{where}: make {t}" for where, t in named if t not in targets]
    assert not missing, f"targets not in the Makefile ({sorted(targets)}):\n" + "\n".join(missing)


def test_every_documented_python_module_exists():
    found = [(s.where, args[1]) for s, args in documented("python") if args[:1] == ["-m"] and len(args) > 1]
    assert any(module == "neuro_caduceus.demo" for _, module in found)
    missing = [f"{where}: python -m {m}" for where, m in found if importlib.util.find_spec(m) is None]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("neuro-caduceus pca --input out/sm --n-comps 8 --out x", "pca has no option --n-comps"),
        ("neuro-caduceus embed-cohrt --config c.yaml", "no command 'embed-cohrt'"),
        ("neuro-caduceus pilot --config c.yaml --out", "pilot --out needs a value"),
        ("neuro-caduceus personalize --fasta f [--bogus 4]", "personalize has no option --bogus"),
        ("ray job submit --working-dir . -- python -m neuro_caduceus logo --feature m/ --out o",
         "logo has no option --feature"),
    ],
)
def test_the_checker_catches_a_command_that_would_not_parse(line, problem):
    [(_, args)] = documented_cli([Snippet("example", line)])
    assert any(p.startswith(problem) for p in cli_problems(args, commands()))


def test_the_checker_accepts_what_click_accepts():
    line = "neuro-caduceus pilot --config c.yaml --out o --no-strand-check --local-flank=100  # comment"
    [args] = invocations(tokens(Snippet("example", line)), "neuro-caduceus")
    assert cli_problems(args, commands()) == []
    cmd = commands().commands["pilot"]
    cmd.make_context("pilot", list(args), resilient_parsing=True)  # click itself parses it


def test_snippets_join_continuation_lines_and_find_inline_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `make demo` first.\n\n```bash\nneuro-caduceus pca --input a \\\n    --out b\n```\n")
    found = [s.text for s in snippets(page, tmp_path)]
    assert "make demo" in found
    assert any(t.startswith("neuro-caduceus pca --input a") and t.endswith("--out b") for t in found)

