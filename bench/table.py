"""The table of benchmark goals in docs/benchmarks.md, generated from bench/results/*.json,
so the documentation never disagrees with the results.

    .venv/bin/python bench/table.py           # rewrite the table in docs/benchmarks.md
    .venv/bin/python bench/table.py --check   # exit 1 (and say so) when docs/benchmarks.md differs

The table sits between the markers ``<!-- bench-goals:begin -->`` and
``<!-- bench-goals:end -->``; one row per goal: the benchmark, the goal, the measured
value against its target, met or not, and when and at which commit that figure was
measured (its section's provenance, else the file's date).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-goals:begin -->", "<!-- bench-goals:end -->"


def _when(result: dict, section: str | None) -> str:
    prov = (result.get(section) or {}).get("provenance") if section else None
    if not isinstance(prov, dict):  # a benchmark measured whole records it once, for the file
        prov = result.get("provenance")
    if isinstance(prov, dict):
        commit = str(prov.get("commit", "—"))
        return f"{prov.get('measured_at', '?')[:10]}, {commit[:7]}{'+' if '+' in commit else ''}"
    return f"{str(result.get('measured_at', '?'))[:10]}, —"


def _number(value) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"


def table() -> str:
    lines = ["| benchmark | goal | value | target | met | measured (date, commit) |", "|---|---|---:|---:|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        for g in result.get("goals", []):
            lines.append(f"| {path.stem} | {g['name']} | {_number(g['value'])} | {_number(g['target'])} | "
                         f"{'yes' if g['met'] else '**no**'} | {_when(result, g.get('section'))} |")
    return "\n".join(lines)


def render(doc: str) -> str:
    """``doc`` with the text between the markers replaced by the current table."""
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC.relative_to(REPO)} lacks the markers {BEGIN} … {END}: put them where the table goes")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = DOC.read_text()
    new = render(doc)
    if "--check" in argv:
        if new != doc:
            print(f"{DOC.relative_to(REPO)}'s benchmark table differs from bench/results/*.json: "
                  "run .venv/bin/python bench/table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
