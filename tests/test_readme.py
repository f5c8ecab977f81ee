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
