"""No doc cites a file that does not exist: the Markdown links of the docs and the README, and the upper-case
Markdown names (README.md, ...) and repository paths named there or in the code's docstrings and comments
(a `my_` file is the reader's own copy, e.g. configs/my_cohort.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CODE = sorted(p for folder in ("neuro_caduceus", "benchmarks", "scripts", "ray_jobs")
              for p in (ROOT / folder).rglob("*.py"))
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
UPPER_MD = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
FOLDERS = "neuro_caduceus|tests|benchmarks|configs|scripts|docs|ray_jobs"
REPO_PATH = re.compile(rf"\b((?:{FOLDERS})/[\w./-]*\w\.\w+)")
AREA_PATH = re.compile(r"(?<![\w/])((?:cohort|model|genome|stats|variants|analysis)/\w+\.py)\b")


def _missing(path: Path, text: str) -> list[str]:
    bad = []
    for link in LINK.findall(text) if path.suffix == ".md" else ():
        if "://" not in link and not link.startswith("mailto:") and not (path.parent / link).exists():
            bad.append(f"link {link}")
    for name in UPPER_MD.findall(text):
        if not any((where / name).exists() for where in (path.parent, ROOT, ROOT / "docs")):
            bad.append(name)
    bad += [p for p in REPO_PATH.findall(text)
            if not (ROOT / p).exists() and not Path(p).name.startswith("my_")]
    bad += [p for p in AREA_PATH.findall(text) if not (ROOT / "neuro_caduceus" / p).exists()]
    return [f"{path.relative_to(ROOT)}: {b}" for b in bad]


def test_every_cited_file_exists():
    missing = [m for path in [*DOCS, *CODE] for m in _missing(path, path.read_text())]
    assert not missing, "\n".join(missing)


def test_the_check_finds_a_missing_file(tmp_path):
    """The oracle of the check itself: a page citing files that are not there is caught, one that cites
    existing ones is not."""
    page = ROOT / "docs" / "page.md"
    text = "see [the map](pipeline.md), INTERFACES.md, neuro_caduceus/cohort/nothing.py and stats/pca.py"
    assert [m.split(": ", 1)[1] for m in _missing(page, text)] == [
        "INTERFACES.md", "neuro_caduceus/cohort/nothing.py"]
    assert _missing(page, "[gone](gone.md) and cohort/gone.py") == [
        "docs/page.md: link gone.md", "docs/page.md: cohort/gone.py"]
