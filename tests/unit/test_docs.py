"""The README and docs/ say what is true: the README stays short, every relative link and
repository path they name exists, and every ``python -m pipeline …`` line in their code
blocks parses with the real command line and names real config keys; the quick ones run.
A failure names the document and the line."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, parse_with_overrides
from pipeline.config import ConfigError, load_config, to_dict

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_LIMIT = 15_360
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
MAX_SKIPPED = 4  # command lines left unchecked because they hold `...`/`…` or [optional] parts
PLACEHOLDER = re.compile(r"<[^<>\s]+>")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def fenced_blocks(path: Path):
    """Yield (language, [(line number, text), ...]) for each fenced code block."""
    block, lang = None, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            if block is None:
                block, lang = [], line.lstrip()[3:].strip().lower()
            else:
                yield lang, block
                block = None
        elif block is not None:
            block.append((number, line))


def shell_lines(path: Path):
    """Yield (line number, text) for each logical shell line (``\\`` continuations joined)."""
    for lang, block in fenced_blocks(path):
        if lang not in SHELL_FENCES:
            continue
        start, parts = None, []
        for number, line in block:
            start = number if start is None else start
            parts.append(line.rstrip()[:-1] if line.rstrip().endswith("\\") else line)
            if not line.rstrip().endswith("\\"):
                yield start, " ".join(parts)
                start, parts = None, []


def pipeline_commands(path: Path):
    """Yield (line number, argv after ``python -m pipeline``) for each such command."""
    for number, line in shell_lines(path):
        if "-m pipeline" not in line:
            continue
        tokens = shlex.split(line.replace("$ ", "", 1) if line.startswith("$ ") else line, comments=True)
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token in {"&&", "||", "|", ";"}:
                for i in range(len(segment) - 2):
                    if segment[i].endswith(("python", "python3")) and segment[i + 1:i + 3] == ["-m", "pipeline"]:
                        yield number, segment[i + 3:]
                        break
                segment = []
            else:
                segment.append(token)


def all_commands():
    return [(doc, number, argv) for doc in DOCS for number, argv in pipeline_commands(doc)]


def is_skipped(argv: list[str]) -> bool:
    return any("..." in t or "…" in t or t.startswith("[") for t in argv)


def parse(argv: list[str]):
    """The real CLI's parse of ``argv``; a usage error becomes ValueError with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_with_overrides(build_parser(print_only="--print-config" in argv), argv)
    except SystemExit:
        raise ValueError(err.getvalue().strip().splitlines()[-1]) from None


def test_readme_is_short():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size:,} bytes, over {README_LIMIT:,}: move detail into docs/ "
                                  "and link it")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_resolves():
    bad = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (doc.parent / file_part).resolve() if file_part else doc
                if not linked.exists():
                    bad.append(f"{rel(doc)}:{number}: link to {target!r}: {file_part} does not exist")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    bad.append(f"{rel(doc)}:{number}: link to {target!r}: no heading '#{anchor}' in {rel(linked)}")
    assert not bad, "\n".join(bad)


# Repository paths named in the text: conf files, scripts, modules, templates, test files.
REPO_PATH = re.compile(r"(?<![\w./-])((?:conf|jobs|deploy|bench|tests|pipeline|docs)/[\w./-]*\w\.(?:py|sh|yaml|md|sbatch|json))\b")


def test_every_repository_path_named_exists():
    bad = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for name in REPO_PATH.findall(line):
                if re.search(r"/[A-Z]\.\w+$", name):  # conf/X.yaml: a placeholder
                    continue
                if not (REPO / name).exists() and not (doc.parent / name).exists():
                    bad.append(f"{rel(doc)}:{number}: names {name}, which does not exist")
    assert not bad, "\n".join(bad)


def test_every_pipeline_command_parses_and_names_real_config_keys(monkeypatch):
    monkeypatch.chdir(REPO)
    bad, skipped, checked = [], [], 0
    for doc, number, argv in all_commands():
        where = f"{rel(doc)}:{number}: python -m pipeline {' '.join(argv)}"
        if is_skipped(argv):
            skipped.append(where)
            continue
        checked += 1
        try:
            args = parse(argv)
        except ValueError as err:
            bad.append(f"{where}: does not parse: {err}")
            continue
        config = getattr(args, "config", None)
        if config is None or PLACEHOLDER.search(config):
            continue
        if not (REPO / config).is_file():
            bad.append(f"{where}: --config {config} does not exist")
            continue
        try:
            load_config(REPO / config, args.overrides)
        except ConfigError as err:
            bad.append(f"{where}: {err}")
    assert checked >= 10, f"only {checked} commands found in README.md and docs/*.md: is the extraction broken?"
    assert not bad, "\n".join(bad)
    assert len(skipped) <= MAX_SKIPPED, ("too many command lines left unchecked (placeholders `...` or [optional]); "
                                         "write them as real commands:\n" + "\n".join(skipped))


def test_the_extraction_sees_a_broken_command(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text("```bash\npython -m pipeline train --config conf/digits_cnn.yaml --np two\n"
                   ".venv/bin/python -m pipeline score --config conf/digits_cnn.yaml \\\n  --print-config trian.epochs=3\n```\n")
    (number1, argv1), (number2, argv2) = pipeline_commands(doc)
    assert (number1, number2) == (2, 3) and argv2[-1] == "trian.epochs=3"
    with pytest.raises(ValueError, match="invalid int value: 'two'"):
        parse(argv1)
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="trian"):
        load_config(REPO / "conf/digits_cnn.yaml", parse(argv2).overrides)


def test_each_config_shown_prints_with_print_config():
    seen: dict[str, tuple[str, list[str]]] = {}
    for doc, number, argv in all_commands():
        if is_skipped(argv):
            continue
        args = parse(argv)
        config = getattr(args, "config", None)
        if config and not PLACEHOLDER.search(config) and config not in seen:
            seen[config] = (f"{rel(doc)}:{number}", [args.command, "--config", config, "--print-config", *args.overrides])
    assert "conf/digits_cnn.yaml" in seen, sorted(seen)
    bad = []
    for config, (where, argv) in sorted(seen.items()):
        proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not proc.stdout.startswith("name:"):
            bad.append(f"{where}: python -m pipeline {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    assert not bad, "\n".join(bad)


def test_help_runs():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("doctor", "prepare", "train", "score", "run", "inspect"):
        assert command in proc.stdout


def test_the_configuration_page_shows_the_default_experiment(tmp_path, monkeypatch):
    page = REPO / "docs" / "configuration.md"
    (first_yaml,) = [block for lang, block in fenced_blocks(page) if lang == "yaml"][:1]
    shown = tmp_path / "shown.yaml"
    shown.write_text("\n".join(text for _, text in first_yaml) + "\n")
    monkeypatch.chdir(REPO)
    try:
        from_page = to_dict(load_config(shown))
    except ConfigError as err:
        pytest.fail(f"docs/configuration.md:{first_yaml[0][0]}: the YAML block does not load: {err}")
    assert from_page == to_dict(load_config(REPO / "conf/digits_cnn.yaml")), (
        f"docs/configuration.md:{first_yaml[0][0]}: the YAML block no longer equals conf/digits_cnn.yaml's config")
