"""The run accounts for itself: every skip names its reason, CI's skips are the ones README lists, and README's
test counts come from the suite (scripts/test_counts.py), never typed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import suite_report
from suite_report import README, ROOT, SKIPS, allowed_skips, is_ci, unexplained, unlisted

MADE_UP = [
    {"nodeid": "tests/test_a.py::test_x[postgresql]", "reason": "GENLOOM_TEST_DATABASE_URL is not set: no server"},
    {"nodeid": "tests/test_b.py", "reason": "could not import 'foo': No module named 'foo'"},
    {"nodeid": "tests/test_c.py::test_y", "reason": "unconditional skip"},
]


def test_readme_lists_ci_skips_in_a_block_this_suite_reads():
    allowed = allowed_skips(README.read_text(encoding="utf-8"))
    for nodeid, reason in allowed:
        assert nodeid.startswith("tests/test_") and len(reason.split()) >= 2, (nodeid, reason)


def test_allowed_skips_block_rejects_a_line_without_a_reason():
    with pytest.raises(ValueError, match="reason"):
        allowed_skips("```text allowed-skips\ntests/test_a.py::test_x\n```\n")
    assert allowed_skips("```text allowed-skips\n# a comment\ntests/test_a.py | no server\n```\n") == \
        [("tests/test_a.py", "no server")]
    with pytest.raises(ValueError, match="no ```text allowed-skips"):
        allowed_skips("# README\n")


def test_the_checkers_find_unlisted_and_unexplained_skips():
    allowed = [("tests/test_a.py::test_x", "GENLOOM_TEST_DATABASE_URL is not set")]
    assert unlisted(MADE_UP, allowed) == MADE_UP[1:]
    assert unlisted(MADE_UP, []) == MADE_UP
    assert unlisted(MADE_UP[:1], [("tests/test_a.py::test_x", "some other reason")]) == MADE_UP[:1]
    assert unlisted(MADE_UP[:1], [("tests/test_b.py", "GENLOOM_TEST_DATABASE_URL")]) == MADE_UP[:1]
    assert unexplained(MADE_UP) == MADE_UP[1:]


@pytest.mark.after_all
def test_every_skip_of_this_run_names_its_reason():
    bad = unexplained(SKIPS)
    if bad:
        pytest.fail("skips that do not say why (pass reason=...):\n" +
                    "\n".join(f"  {s['nodeid']} ({s['where']}): {s['reason']!r}" for s in bad), pytrace=False)


@pytest.mark.after_all
def test_ci_run_skips_only_what_readme_lists():
    if not is_ci():
        pytest.skip("not a CI run (CI=true is not set): only CI's skips are held to README's allowed-skips list")
    extra = unlisted(SKIPS, allowed_skips(README.read_text(encoding="utf-8")))
    if extra:
        pytest.fail(f"CI skipped {len(extra)} test(s) README's allowed-skips block does not list (install what they "
                    "need, or list them there with their reason):\n" +
                    "\n".join(f"  {s['nodeid']} ({s['where']}): {s['reason']}" for s in extra), pytrace=False)


# ---- README's test counts ------------------------------------------------------------------------------------
# "607 tests", "12 failed", but not "the 10,000 test images"
TYPED = re.compile(r"\b\d[\d,]*\s+(?:tests|passed|skipped|failed|errors|test cases)\b", re.I)


def _without_counts_block(text: str) -> str:
    return re.sub(r"<!-- test-counts:.*?<!-- /test-counts -->", "", text, flags=re.S)


def test_readme_and_docs_type_no_test_counts():
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    typed = [(f.name, m.group(0)) for f in files for m in TYPED.finditer(_without_counts_block(f.read_text()))]
    assert not typed, f"typed test counts (let scripts/test_counts.py write them): {typed}"
    assert "<!-- /test-counts -->" in README.read_text(), "README lost its test-counts block"


def test_the_guard_sees_a_typed_count():
    assert TYPED.search("On a fresh clone `.ci/run` ran 607 tests (PostgreSQL included)")
    assert TYPED.search("48 tests, including the sampler contract") and TYPED.search("12 failed, 40 passed")
    assert not TYPED.search("on the 10,000 test images") and not TYPED.search("tests/test_x.py, 2 s")
    assert not TYPED.search(_without_counts_block("<!-- test-counts: x -->\n600 passed\n<!-- /test-counts -->"))


def _counts(tmp_path, **over):
    data = {"counts": {"passed": 612, "failed": 0, "error": 0, "skipped": 1, "xfailed": 0, "xpassed": 0,
                       "deselected": 0},
            "seconds": 125.4, "finished_at": "2030-01-02T03:04:05+00:00", "ci": True, "postgresql": True, "cpus": 2,
            "python": "3.13.5", "torch": "2.13.0+cpu", "platform": "linux", "skips": []}
    data["counts"].update(over)
    path = tmp_path / "test-counts.json"
    path.write_text(json.dumps(data))
    return path


def _script(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "test_counts.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_counts_script_rewrites_only_its_block(tmp_path):
    from_readme = README.read_text(encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(from_readme, encoding="utf-8")
    counts = _counts(tmp_path)
    res = _script("--readme", readme, "--counts", counts)
    assert res.returncode == 0, res.stderr
    new = readme.read_text()
    assert "612 passed, 1 skipped, 0 failed, 0 errors, in 2 min 5 s" in new and "PostgreSQL included" in new
    assert _without_counts_block(new) == _without_counts_block(from_readme)  # nothing else changed
    assert _script("--readme", readme, "--counts", counts, "--check").returncode == 0
    assert _script("--readme", readme, "--counts", _counts(tmp_path, passed=613), "--check").returncode == 1
    failed = _script("--readme", readme, "--counts", _counts(tmp_path, failed=2))
    assert failed.returncode == 1 and "2 failed" in failed.stderr
    assert _script("--readme", readme, "--counts", tmp_path / "missing.json").returncode == 2


def _session(args_source="ArgsSource.TESTPATHS", **option):
    opts = dict(keyword="", markexpr="", lf=False, deselect=None, maxfail=0, collectonly=False)
    opts.update(option)
    stats = {"passed": [1] * 5, "skipped": [1] * 2, "failed": [], "deselected": []}
    reporter = SimpleNamespace(stats=stats)
    plugins = SimpleNamespace(get_plugin=lambda name: reporter if name == "terminalreporter" else None)
    return SimpleNamespace(config=SimpleNamespace(args_source=args_source, option=SimpleNamespace(**opts),
                                                  pluginmanager=plugins))


def test_counts_are_written_for_whole_suite_runs_only(tmp_path, monkeypatch):
    monkeypatch.setattr(suite_report, "COUNTS", tmp_path / "test-counts.json")
    monkeypatch.setattr(suite_report, "SKIPS", [MADE_UP[0]])
    path = suite_report.write_counts(_session(), 0)
    data = json.loads(path.read_text())
    assert data["counts"] == {"passed": 5, "failed": 0, "error": 0, "skipped": 2, "xfailed": 0, "xpassed": 0,
                              "deselected": 0}
    assert data["skips"] == [MADE_UP[0]] and data["seconds"] >= 0 and "torch" in data
    path.unlink()
    for partial in [_session("ArgsSource.ARGS"), _session(keyword="auth"), _session(markexpr="not slow"),
                    _session(maxfail=1), _session(collectonly=True), _session(lf=True)]:
        assert suite_report.write_counts(partial, 0) is None and not path.exists()
    assert suite_report.write_counts(_session(), 2) is None  # interrupted: no counts
