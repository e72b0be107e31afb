#!/usr/bin/env python3
"""Write README's test-counts block from what the suite itself recorded (test-artifacts/test-counts.json).

The file is written by tests/conftest.py at the end of a whole-suite run (`python3 -m pytest -q`, as .ci/run
runs it); this script never types a number of its own. Usage:

    python3 scripts/test_counts.py            # rewrite the block between the test-counts markers in README.md
    python3 scripts/test_counts.py --check    # exit 1 if README's block differs from the recorded run
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- test-counts: written by scripts/test_counts.py from test-artifacts/test-counts.json; do not edit -->"
END = "<!-- /test-counts -->"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def render(data: dict) -> str:
    """One sentence from the recorded run: what ran where, and every outcome pytest counted."""
    c = data["counts"]
    parts = [f"{c['passed']} passed", f"{c['skipped']} skipped", f"{c['failed']} failed", f"{c['error']} errors"]
    parts += [f"{c[k]} {k}" for k in ("xfailed", "xpassed", "deselected") if c.get(k)]
    where = ["CI=true" if data["ci"] else "not CI",
             "PostgreSQL included" if data["postgresql"] else "without PostgreSQL",
             f"{data['cpus']} CPUs", f"Python {data['python']}", f"torch {data['torch']}"]
    return (f"The last whole-suite run ({data['finished_at'][:10]}; {', '.join(where)}): {', '.join(parts)}, "
            f"in {_duration(data['seconds'])} (pytest's own count, from `test-artifacts/test-counts.json`).")


def rewrite(readme: str, data: dict) -> str:
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"test_counts: README has no block between\n  {BEGIN}\n  {END}")
    return pattern.sub(lambda _: f"{BEGIN}\n{render(data)}\n{END}", readme, count=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when README's block is stale")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--counts", type=Path, default=ROOT / "test-artifacts" / "test-counts.json")
    args = ap.parse_args(argv)
    if not args.counts.is_file():
        print(f"test_counts: {args.counts} is missing: run the whole suite first (python3 -m pytest -q)",
              file=sys.stderr)
        return 2
    data = json.loads(args.counts.read_text(encoding="utf-8"))
    if data["counts"]["failed"] or data["counts"]["error"]:
        print(f"test_counts: the recorded run had {data['counts']['failed']} failed and {data['counts']['error']} "
              "errors; README shows the counts of a green run only", file=sys.stderr)
        return 1
    old = args.readme.read_text(encoding="utf-8")
    new = rewrite(old, data)
    print(render(data))
    if args.check:
        if new != old:
            print("test_counts: README's block differs from the recorded run (python3 scripts/test_counts.py)",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
