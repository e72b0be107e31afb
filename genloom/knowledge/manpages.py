"""Man pages as documentation: rendered offline with man-db, one Markdown file per page, one `###` section per
option (a passage that says what it is about), and questions about options written from them.

Used by bench/make_docs.py (the benchmark's documentation folder and its held-out questions, pages HELD_OUT) and by
the grounded chat starter's training examples (genloom.knowledge.examples, source `support-grounded`: section-1
pages installed on the machine that are NOT in HELD_OUT, so the benchmark's pages stay unseen).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# The benchmark's pages (bench/make_docs.py): never used for training.
HELD_OUT = ["ls", "cp", "mv", "rm", "mkdir", "ln", "chmod", "chown", "touch", "cat", "head", "tail", "wc", "sort",
            "uniq", "cut", "tr", "du", "df", "date", "split", "paste", "join", "comm", "nl", "od", "base64", "stat",
            "readlink", "realpath", "seq", "shuf", "timeout", "tee", "env", "uname", "find", "xargs", "grep", "sed",
            "tar", "gzip", "xz", "diff", "less", "man", "ps", "kill", "mktemp", "install"]
MAN1 = Path("/usr/share/man/man1")
MAX_OPTIONS = 40  # per page, in page order
MAX_DESCRIPTION_PARAGRAPHS = 3
_SECTION = re.compile(r"^[A-Z][A-Z0-9 ,/&-]+$")
_OPTION = re.compile(r"^ {7}(-\S.*?)(?: {2,}(\S.*))?$")  # an option's tag, and its text when on the same line
_LONG = re.compile(r"--([a-z][a-z0-9-]+)")
_PAGE = re.compile(r"^[a-z][a-z0-9_+-]*$")


def render(page: str) -> str | None:
    """A section-1 man page as plain text, or None when it is not installed (or man-db is not)."""
    env = {**os.environ, "MANWIDTH": "2000", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    try:
        r = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "1", page], capture_output=True, text=True, env=env,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
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


def option_questions(page: str, info: dict) -> list[dict]:
    """Every option with a long name unique on its page and a first sentence of 3+ words: the question
    "What does the --NAME option of PAGE do?", the reference (that sentence) and the answer's heading path."""
    longs = [(m.group(0), tag, body) for tag, body in info["options"] for m in [_LONG.search(tag)] if m]
    names = [n for n, _, _ in longs]
    return [{"id": f"docs/{page}/{name}", "question": f"What does the {name} option of {page} do?",
             "reference": first_sentence(body), "source": f"{page}.md",
             "heading": f"{info['name'] or page} > Options > {tag}"}
            for name, tag, body in longs if names.count(name) == 1 and len(first_sentence(body).split()) >= 3]


def pick_questions(page: str, info: dict, rng: np.random.Generator, n: int) -> list[dict]:
    """A seeded choice of at most n of option_questions, in page order."""
    usable = option_questions(page, info)
    if not usable:
        return []
    return [usable[i] for i in sorted(rng.choice(len(usable), min(n, len(usable)), replace=False).tolist())]


def training_pages(limit: int, folder: Path = MAN1, is_command=shutil.which) -> list[str]:
    """Installed section-1 pages of commands on PATH (not the thousands of sub-command pages some tools install),
    outside HELD_OUT: at most `limit`, evenly spread over their sorted names."""
    if not folder.is_dir():
        return []
    names = {f.name.split(".")[0] for f in folder.iterdir()}
    pages = sorted(n for n in names if _PAGE.match(n) and n not in HELD_OUT and is_command(n))
    if len(pages) <= limit:
        return pages
    return [pages[i] for i in np.linspace(0, len(pages) - 1, limit).round().astype(int)]


def render_many(pages: list[str], workers: int = 4) -> dict[str, str | None]:
    """render() for many pages at once (man-db is a subprocess: threads overlap them)."""
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(pages, pool.map(render, pages)))


COMMON = {"--help", "--version"}  # options every GNU tool has, worded alike


def same_page(info: dict, others: list[dict]) -> bool:
    """Whether a parsed page is one of `others` under another name: the same NAME line, or half or more of its
    options (but --help and --version) word for word in one of them."""
    mine = {o for o in info["options"] if not set(_LONG.findall(o[0])) & {c[2:] for c in COMMON}}
    for other in others:
        if info["name"] and info["name"] == other["name"]:
            return True
        if mine and len(mine & set(other["options"])) >= len(mine) / 2:
            return True
    return False
