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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOC_PREFIX = "Doc: "
NOT_FOUND = "I could not find that in the documents I have."
_SPACE = re.compile(r"\s+")


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
        flat = (cut.rsplit(" ", 1)[0] if " " in cut[passage_chars // 2:] else cut).rstrip() + " ..."
    return f"{DOC_PREFIX}{flat}\n"


def context_block(passages: list[str], grounding: Grounding) -> str:
    """The `Doc:` lines for the first `grounding.k` passages, best first."""
    return "".join(doc_line(p, grounding.passage_chars) for p in passages[: grounding.k])
