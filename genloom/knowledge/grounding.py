"""How retrieved passages enter a chat prompt: the one layout that training examples and the server share.

A grounded prompt is the dialogue's earlier turns, then one `Doc: ...` line per retrieved passage (best first,
each flattened to one line and cut to `passage_chars`), then the user's question and the reply cue:

    User: hi
    Bot: Hello!
    Doc: Q: How do I reset my password? A: Click "Forgot password" on the login page.
    Doc: Q: Can I change my email? A: Yes, under Settings > Account.
    User: I forgot my password
    Bot:

A model trained on such prompts (the answer's own passage among distractors) learns to copy and adapt the
passage that answers; the server renders the same layout from its knowledge base, so what the model saw in
training is what it sees when served. When no passage clears `min_cosine`, nothing relevant was found and
the server answers `NOT_FOUND` instead of letting the model invent.

A Doc line shows at most `passage_chars` of its passage and marks the cut with CUT (" ..."). Where an answer runs
past the cut, the reply to learn is the answer's shown part and CUT (`shown_reply`); a served reply that ends so
(stop string CUT) goes on with the rest of that answer from the passage itself (`copy_through`): the model picks
the passage and copies what it can see, and the document completes what the prompt had to leave out (a code
example, a procedure), to the next user turn or the passage's end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOC_PREFIX = "Doc: "
CUT = " ..."  # where doc_line cut a passage
STOP = [CUT, f"\n{DOC_PREFIX.rstrip()}"]  # a grounded reply's stop strings: a copied cut (then copy_through), a Doc line
NOT_FOUND = "I could not find that in the documents I have."
_SPACE = re.compile(r"\s+")
_TURN = re.compile(r"(?:^|\s)(User|Bot):")
_NEXT_USER = re.compile(r"(?:^|\s)User: ")


@dataclass(frozen=True, kw_only=True)
class Grounding:
    """How many passages go into a prompt, how long each may be, and the relevance floor (MiniLM cosine)."""

    k: int = 3
    passage_chars: int = 240
    min_cosine: float = 0.35

    def check(self) -> "Grounding":
        if not 1 <= self.k <= 20:
            raise ValueError(f"k must be between 1 and 20 (got {self.k})")
        if self.passage_chars < 16:
            raise ValueError(f"passage_chars must be at least 16 (got {self.passage_chars})")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be between -1 and 1 (got {self.min_cosine})")
        return self


def doc_line(text: str, passage_chars: int) -> str:
    """One passage as one prompt line: whitespace (newlines included) collapsed, cut at a word end."""
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) > passage_chars:
        cut = flat[:passage_chars]
        flat = (cut.rsplit(" ", 1)[0] if " " in cut[passage_chars // 2:] else cut).rstrip() + CUT
    return f"{DOC_PREFIX}{flat}\n"


def context_block(passages: list[str], grounding: Grounding) -> str:
    """The `Doc:` lines for the first `grounding.k` passages, best first."""
    return "".join(doc_line(p, grounding.passage_chars) for p in passages[: grounding.k])


def fitting(passages: list[str], prompt_of, count, room: int) -> int:
    """How many of the passages (best first) a prompt can hold: the most n whose `prompt_of(passages[:n])` counts
    (`count`, in tokens) at most `room`, at least 1. The worst passages go first, never the start of the best."""
    for n in range(len(passages), 1, -1):
        if count(prompt_of(passages[:n])) <= room:
            return n
    return min(1, len(passages))


def shown_reply(reply: str, passage: str, grounding: Grounding) -> str:
    """The reply to learn for an answer in `passage`: the reply on one line, as its Doc line shows it; when the
    line was cut inside it, its shown part and CUT (the served reply stops there and copy_through goes on)."""
    flat = _SPACE.sub(" ", reply).strip()
    body = _cut_body(passage, grounding)
    if body is None:
        return flat
    full = _SPACE.sub(" ", passage).strip()  # body is a prefix of it
    at = full.find(f"Bot: {flat}")
    at = at + len("Bot: ") if at != -1 else full.find(flat)
    if 0 <= at < len(body) < at + len(flat) and _answering(body, at):
        return body[at:] + CUT
    return flat


def copy_through(reply: str, passages: list[str], grounding: Grounding) -> str:
    """A reply that stopped at CUT, continued with the rest of the answer it copied; unchanged when it copied none.

    It copied one when (whitespace collapsed) it is the end of a cut Doc line's text, from the start of a word,
    inside an answer (after a `Bot:` where the passage has turns). The rest runs from the cut to the passage's
    next user turn or its end, with the passage's own line breaks."""
    said = _SPACE.sub(" ", reply).strip()
    if not said:
        return reply
    for text in passages[: grounding.k]:
        body = _cut_body(text, grounding)
        if body is None:
            continue
        at = len(body) - len(said)
        if not body.endswith(said) or not _answering(body, at):
            continue
        rest = text[_after(text, body):]
        rest = rest[: m.start()] if (m := _NEXT_USER.search(rest)) else rest
        return reply.rstrip() + rest.rstrip()
    return reply


def _cut_body(passage: str, grounding: Grounding) -> str | None:
    """What the passage's Doc line shows of it before CUT; None when the line holds it whole."""
    shown = doc_line(passage, grounding.passage_chars)[len(DOC_PREFIX):].rstrip("\n")
    return shown[: -len(CUT)] if shown.endswith(CUT) else None


def _answering(flat: str, at: int) -> bool:
    """Whether position `at` of a flattened passage starts a word inside an answer: after a `Bot:` when the
    passage has turns before it, and with no user turn between."""
    if at > 0 and flat[at - 1] != " ":
        return False
    turns = _TURN.findall(flat[:at])
    return not turns or turns[-1] == "Bot"


def _after(text: str, flat: str) -> int:
    """The index in `text` just after its first len(flat) characters once whitespace is collapsed (flat's
    non-space characters are text's non-whitespace ones, in order)."""
    need, seen = len(flat.replace(" ", "")), 0
    for i, ch in enumerate(text):
        if not ch.isspace():
            seen += 1
            if seen == need:
                return i + 1
    return len(text)
