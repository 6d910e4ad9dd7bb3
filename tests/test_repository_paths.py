"""Only this repository's files are cited: no code, docstring, doc page, example, README or committed
report may point a reader at a file outside the repository (the project's internal notes and specs are
not shipped, so a user following such a reference finds nothing).

Generated reports take their text from ``src/``, so scanning ``src/`` covers what every future report
prints; the committed reports under ``docs/results`` are scanned as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "docs", "examples", "benchmarks", "tests", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".html", ".txt", ".toml", ".cfg", ".rst", ".yml", ".yaml", ".ipynb", ".sh"}
#: references to the internal notes and specs, by path or by bare file name ("gala.md §13")
OUTSIDE = re.compile(
    r"notes/benchmarks|shared/algorithms|shared/DESIGN|DESIGN\.md|\.\./shared|/work/shared"
    r"|(?<![\w/-])(?:momo|smes|agd|rsgdm|gala|benchmarks)\.md\b"
)


def scanned_files(root: Path = ROOT) -> list[Path]:
    files = []
    for name in SCANNED:
        path = root / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [p for p in candidates if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and p.resolve() != Path(__file__).resolve()]
    return files


def outside_references(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: "
                             f"{match.group(0)}")
    return found


@pytest.mark.parametrize("text", [
    "see notes/benchmarks.md 3c", "shared/algorithms/gala.md", "the contract (shared/DESIGN.md)",
    "as in DESIGN.md", "../shared/x", "gala.md §13", "(smes.md §8)",
])
def test_the_pattern_catches_outside_references(tmp_path: Path, text: str) -> None:
    (tmp_path / "a.py").write_text(f'"""{text}"""\n')
    assert outside_references([tmp_path / "a.py"])


@pytest.mark.parametrize("text", ["docs/benchmark.md", "docs/gala-measurements.md", "README.md"])
def test_the_pattern_leaves_repository_files_alone(tmp_path: Path, text: str) -> None:
    (tmp_path / "a.md").write_text(text)
    assert not outside_references([tmp_path / "a.md"])


def test_no_file_cites_a_path_outside_the_repository() -> None:
    files = scanned_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    found = outside_references(files)
    assert not found, "references to files outside the repository:\n" + "\n".join(found)
