"""tools/test_durations.py: the suite's time per module and its slowest tests, from pytest's junit XML, against a
baseline, with the Snakemake starts counted per module."""
import importlib.util

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("test_durations_tool", REPO / "tools" / "test_durations.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _junit(path, wall, cases):
    body = "".join(f'<testcase classname="tests.{m}" name="{n}" time="{s}"/>' for m, n, s in cases)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" time="{wall}" tests="{len(cases)}">'
                    f"{body}</testsuite></testsuites>")
    return path


def test_the_report_sums_modules_orders_the_slowest_and_compares_with_the_baseline(tmp_path):
    after = _junit(tmp_path / "after.xml", 70.0, [("test_a", "test_one", 30.0), ("test_a", "test_two[x]", 5.5),
                                                  ("test_b", "test_three", 50.25)])
    before = _junit(tmp_path / "before.xml", 120.0, [("test_a", "test_one", 60.0), ("test_b", "test_three", 40.0),
                                                     ("test_b", "test_gone", 1.0)])
    starts = tmp_path / "starts.log"
    starts.write_text("1.0\ttests/test_a.py::test_one\t-n\n2.0\ttests/test_a.py::test_one\truns\n"
                      "3.0\ttests/test_b.py::test_three\truns\n")
    text = tool.report(after, before, top=2, starts=starts, title="t")
    lines = text.splitlines()
    assert lines[0] == "# t"
    assert lines[2] == ("3 tests, 1 min 25.8 s in tests, 1 min 10.0 s wall "
                        "(before: 3 tests, 1 min 41.0 s in tests, 2 min 00.0 s wall)")
    assert "| tests/test_b.py | 50 | 41 | 1 |" in lines and "| tests/test_a.py | 36 | 60 | 2 |" in lines
    assert lines.index("| tests/test_b.py | 50 | 41 | 1 |") < lines.index("| tests/test_a.py | 36 | 60 | 2 |")
    assert "Snakemake starts: 3" in lines
    slowest = [ln for ln in lines if ln.startswith("| tests/test_") and "::" in ln]
    assert slowest == ["| tests/test_b.py::test_three | 50.2 | 40.0 |", "| tests/test_a.py::test_one | 30.0 | 60.0 |"]
    assert lines[-1] == "Tests in the baseline only: 1 (tests/test_b.py::test_gone)"
