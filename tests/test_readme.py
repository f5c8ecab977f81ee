"""The README's numbers are produced by the code: its generated blocks equal what tools/readme.py makes now."""
import subprocess
import sys

from tests.conftest import REPO


def test_readme_generated_blocks_are_up_to_date():
    proc = subprocess.run([sys.executable, "tools/readme.py", "--check"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_stale_block_is_named(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import readme
    finally:
        sys.path.pop(0)
    stale = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- generated: laptop-main -->\n") + len("<!-- generated: laptop-main -->\n")
    stale.write_text(text[:start] + "| ce | 99.99 ± 0.00 (2) |\n" + text[start:])
    monkeypatch.setattr(readme, "README", stale)
    assert readme.main(["--check"]) == 1
    assert stale.read_text() == text[:start] + "| ce | 99.99 ± 0.00 (2) |\n" + text[start:]  # --check writes nothing


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_docs_reaches_a_file_and_heading_that_exist():
    import re

    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 5
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s): not checked offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no file)")
            elif anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
                if anchor not in heads:
                    broken.append(f"{page.name}: {target} (no heading)")
    assert not broken, broken


def test_the_readme_is_a_page_a_newcomer_reads_in_minutes_and_links_every_docs_page():
    text = (REPO / "README.md").read_text()
    assert len(text.split()) < 2000, len(text.split())  # about five minutes of reading
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, page.name
