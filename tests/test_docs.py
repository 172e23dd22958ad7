"""The README is a first screen that leads to docs/: short, commands before prerequisites,
and every link in it and in docs/ leads to a page (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    return broken


def test_the_readme_fits_a_first_screen_and_says_what_to_do_first() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 200
    two = section(text, "Two commands")
    assert two.index("./scripts/run ") < two.index("./scripts/test ") < two.index("Python 3.11")


def test_every_link_in_the_readme_and_docs_leads_somewhere() -> None:
    assert {p.name: broken_links(p) for p in [README, *DOCS]} == {
        p.name: [] for p in [README, *DOCS]
    }


def test_every_docs_page_the_readme_names_exists() -> None:
    named = set(re.findall(r"docs/[\w-]+\.md", README.read_text()))
    assert named
    assert sorted(n for n in named if not (REPO / n).exists()) == []


def test_where_to_go_next_links_every_docs_page() -> None:
    listed = set(LINK.findall(section(README.read_text(), "Where to go next")))
    assert sorted(f"docs/{p.name}" for p in DOCS if f"docs/{p.name}" not in listed) == []


def test_citations_of_readme_sections_name_sections_it_has() -> None:
    """A section moved to docs/ leaves no `README, "Section"` citation behind."""
    headings = set(re.findall(r"^#+ (.+)$", README.read_text(), re.M))
    cited = []
    for top in ("sidecar", "monitoring", "docs", "examples", "scripts", "bench", "deploy"):
        for path in (REPO / top).rglob("*"):
            if path.suffix in {".py", ".md", ".yaml", ".yml", ".html"} and path.is_file():
                found = re.findall(r'README[^"\n]{0,3}"([^"\n]+)"', path.read_text())
                cited += [f"{path.relative_to(REPO)}: {c}" for c in found]
    assert [c for c in cited if c.split(": ", 1)[1] not in headings] == []
