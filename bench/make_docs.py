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
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "data"
PAGES = ["ls", "cp", "mv", "rm", "mkdir", "ln", "chmod", "chown", "touch", "cat", "head", "tail", "wc", "sort",
         "uniq", "cut", "tr", "du", "df", "date", "split", "paste", "join", "comm", "nl", "od", "base64", "stat",
         "readlink", "realpath", "seq", "shuf", "timeout", "tee", "env", "uname", "find", "xargs", "grep", "sed",
         "tar", "gzip", "xz", "diff", "less", "man", "ps", "kill", "mktemp", "install"]
QUESTIONS_PER_PAGE = 2
MAX_OPTIONS = 40  # per page, in page order
MAX_DESCRIPTION_PARAGRAPHS = 3
SEED = 1337
_SECTION = re.compile(r"^[A-Z][A-Z0-9 ,/&-]+$")
_OPTION = re.compile(r"^ {7}(-\S.*?)(?: {2,}(\S.*))?$")  # an option's tag, and its text when on the same line
_LONG = re.compile(r"--([a-z][a-z0-9-]+)")


def render(page: str) -> str | None:
    """A man page as plain text, or None when it is not installed."""
    env = {**os.environ, "MANWIDTH": "2000", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    r = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "1", page], capture_output=True, text=True, env=env)
    return r.stdout if r.returncode == 0 and r.stdout.strip() else None


def parse(text: str) -> dict:
    """{"name": one line, "description": [paragraphs], "options": [(tag, description)]} of a rendered page."""
    section, name, desc, options = None, "", [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if _SECTION.match(line):
            section, i = line.strip(), i + 1
            continue
        m = _OPTION.match(line)
        if m and section in ("DESCRIPTION", "OPTIONS"):
            tag, body = m.group(1).strip(), (m.group(2) or "").strip()
            j = i + 1
            if not body:  # the text on the following, deeper-indented lines
                while j < len(lines) and lines[j].startswith(" " * 8) and not body:
                    body = lines[j].strip()
                    j += 1
            if body:
                options.append((tag, " ".join(body.split())))
            i = j
            continue
        if line.strip():
            if section == "NAME" and not name:
                name = " ".join(line.split())
            elif section == "DESCRIPTION" and line.startswith(" " * 7) and not line.startswith(" " * 8) \
                    and not options:
                desc.append(" ".join(line.split()))
        i += 1
    return {"name": name, "description": desc[:MAX_DESCRIPTION_PARAGRAPHS], "options": options[:MAX_OPTIONS]}


def first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.;])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(".;").strip()


def markdown(page: str, info: dict) -> str:
    title = info["name"] or page
    out = [f"# {title}", ""]
    out += [p + "\n" for p in info["description"]]
    out += ["## Options", ""]
    for tag, body in info["options"]:
        out += [f"### {tag}", "", f"`{page} {tag}`: {body}", ""]
    return "\n".join(out).rstrip() + "\n"


def questions(page: str, info: dict, rng: np.random.Generator) -> list[dict]:
    """Seeded questions about options with a unique long name; the reference is the description's first sentence."""
    longs = [(m.group(0), tag, body) for tag, body in info["options"] for m in [_LONG.search(tag)] if m]
    names = [n for n, _, _ in longs]
    usable = [x for x in longs if names.count(x[0]) == 1 and len(first_sentence(x[2]).split()) >= 3]
    if not usable:
        return []
    pick = sorted(rng.choice(len(usable), min(QUESTIONS_PER_PAGE, len(usable)), replace=False).tolist())
    out = []
    for i in pick:
        name, tag, body = usable[i]
        out.append({"id": f"docs/{page}/{name}", "question": f"What does the {name} option of {page} do?",
                    "reference": first_sentence(body), "source": f"{page}.md",
                    "heading": f"{info['name'] or page} > Options > {tag}"})
    return out


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
        qs += questions(page, info, rng)
    (OUT / "docs-questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs), encoding="utf-8")
    print(f"{len(written)} pages -> {docs}, {len(qs)} questions -> {OUT / 'docs-questions.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
