"""The benchmark goal table in docs/benchmarks.md is what bench/results/*.json say (bench/table.py)."""
import json
import shutil

from bench import table


def test_the_docs_table_matches_the_results():
    assert table.DOC.name == "benchmarks.md" and table.BEGIN in table.DOC.read_text()
    assert table.main(["--check"]) == 0, "run .venv/bin/python bench/table.py"


def test_the_readme_carries_no_copy_of_the_table_but_links_it():
    readme = (table.REPO / "README.md").read_text()
    assert table.BEGIN not in readme and "docs/benchmarks.md" in readme


def test_a_changed_figure_is_caught(tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(table.RESULTS, results)
    path = next(p for p in sorted(results.glob("*.json")) if json.loads(p.read_text()).get("goals"))
    data = json.loads(path.read_text())
    data["goals"][0]["value"] = -12345.0
    path.write_text(json.dumps(data))
    monkeypatch.setattr(table, "RESULTS", results)
    assert table.main(["--check"]) == 1
    assert "-12,345" in table.table()
