"""What a test run did, kept by tests/conftest.py's hooks: every skip with its reason, and at the end of a whole-suite
run the counts in test-artifacts/test-counts.json (scripts/test_counts.py writes README's counts block from it).

README's testing section lists the skips CI may show in a fenced block opened with ```text allowed-skips, one
skip per line: `<test id or a prefix of it> | <words from its reason>`; tests/test_skips.py holds CI to it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COUNTS = ROOT / "test-artifacts" / "test-counts.json"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")

SKIPS: list[dict] = []  # {"nodeid", "reason", "where"}, in the order they happened
STARTED = [time.time()]


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def record(report) -> None:
    """pytest_runtest_logreport / pytest_collectreport: keep skips (not xfails) with their reasons."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    where, reason = "", str(report.longrepr)
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, line, reason = report.longrepr
        where = f"{os.path.relpath(path, ROOT) if os.path.isabs(path) else path}:{line}"  # as pytest -ra shows it
    reason = reason.removeprefix("Skipped: ")
    SKIPS.append({"nodeid": report.nodeid, "reason": reason, "where": where})


def allowed_skips(readme: str) -> list[tuple[str, str]]:
    """README's allowed-skips block as (test id prefix, reason words); comment lines start with #."""
    m = re.search(r"^```text allowed-skips\n(.*?)^```", readme, re.S | re.M)
    if m is None:
        raise ValueError("README.md has no ```text allowed-skips block in its testing section")
    out = []
    for line in m.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not nodeid or not reason:
            raise ValueError(f"allowed-skips line {line!r}: write '<test id or prefix> | <words of its reason>'")
        out.append((nodeid, reason))
    return out


def unlisted(skips: list[dict], allowed: list[tuple[str, str]]) -> list[dict]:
    """The skips no allowed entry covers (same test id or prefix, and the entry's words in the reason)."""
    return [s for s in skips
            if not any(s["nodeid"].startswith(n) and r.lower() in s["reason"].lower() for n, r in allowed)]


def unexplained(skips: list[dict]) -> list[dict]:
    """Skips that do not say why: an empty reason, pytest's 'unconditional skip', or a bare import failure."""
    bare = re.compile(r"^(|unconditional skip|could not import '[^']*'(: No module named '[^']*')?)$", re.I)
    return [s for s in skips if bare.match(s["reason"].strip())]


def whole_suite(session) -> bool:
    """Run without file, -k, -m, --lf or deselection (as `python3 -m pytest -q` and .ci/run run it)."""
    cfg = session.config
    opt = cfg.option
    from_testpaths = str(getattr(cfg, "args_source", "")).endswith("TESTPATHS")
    return (from_testpaths and not opt.collectonly and not opt.keyword and not opt.markexpr
            and not getattr(opt, "lf", False) and not getattr(opt, "deselect", None) and not opt.maxfail)


def counts(stats: dict) -> dict:
    """The terminal summary's counts (pytest's reporter keeps one report per outcome in `stats`)."""
    return {k: len(stats.get(k, [])) for k in OUTCOMES + ("deselected",)}


def write_counts(session, exitstatus: int) -> Path | None:
    """At the end of a whole-suite run: test-artifacts/test-counts.json (counts, duration, skips, machine)."""
    if not whole_suite(session) or int(exitstatus) not in (0, 1):  # 0 all passed, 1 some failed
        return None
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return None
    data = {
        "counts": counts(reporter.stats),
        "seconds": round(time.time() - STARTED[0], 1),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "ci": is_ci(),
        "postgresql": bool(os.environ.get("GENLOOM_TEST_DATABASE_URL")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": sys.platform,
        "skips": SKIPS,
    }
    COUNTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = COUNTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, COUNTS)
    return COUNTS
