"""A documentation folder and a held-out question set over it, from man pages Debian installs (offline).

    python3 bench/make_docs.py            # writes bench/data/docs/*.md and bench/data/docs-questions.jsonl

Sources: the section-1 man pages of coreutils, findutils, grep, sed, tar, gzip, xz-utils, diffutils, less,
man-db, procps and util-linux commands listed in PAGES (GPL/BSD-style licences of those packages), rendered with
`man -P cat` (no hyphenation, no justification, one line per paragraph). Each page becomes one Markdown file:
its name line as the title, the first paragraphs of its description, then one `###` section per option whose
body repeats the option's names, so every option is a passage that says what it is about.

Questions are written by this script, deterministically, not by hand: for a seeded choice of at most
QUESTIONS_PER_PAGE options with a long name per page, "What does the --NAME option of CMD do?", the reference
answer the option's description (its first sentence), and the passage that holds the answer named by file and
heading (what genloom's Markdown splitter makes of the `###` section).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from genloom.knowledge.manpages import HELD_OUT, markdown, parse, pick_questions, render  # noqa: E402

OUT = Path(__file__).parent / "data"
PAGES = HELD_OUT  # the pages of the benchmark (kept out of the grounded starter's training examples)
QUESTIONS_PER_PAGE = 2
SEED = 1337


def main() -> int:
    docs = OUT / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for old in docs.glob("*.md"):
        old.unlink()
    rng = np.random.default_rng(SEED)
    qs, written = [], []
    for page in PAGES:
        text = render(page)
        if text is None:
            print(f"skipped {page}: no man page installed", file=sys.stderr)
            continue
        info = parse(text)
        if not info["options"]:
            print(f"skipped {page}: no options found", file=sys.stderr)
            continue
        (docs / f"{page}.md").write_text(markdown(page, info), encoding="utf-8")
        written.append(page)
        qs += pick_questions(page, info, rng, QUESTIONS_PER_PAGE)
    (OUT / "docs-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs), encoding="utf-8")
    print(f"{len(written)} pages -> {docs}, {len(qs)} questions -> {OUT / 'docs-questions.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
