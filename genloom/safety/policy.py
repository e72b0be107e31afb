"""A deployment's moderation policy, applied to the prompts and outputs of every route: the one hook module.

Modes: "block" (a flagged prompt or output is refused: an OpenAI-style 400 naming the categories, code
content_policy_violation; a streamed reply that turns harmful ends with finish_reason "content_filter"),
"flag" (served, and the verdict recorded in the log and the history), "off" (a warning at start-up).
A policy file (TOML or JSON) sets `mode` and per-category `thresholds` over the classifier's tuned ones:

    mode = "block"
    [thresholds]
    "self-harm/intent" = 0.3
    violence = 0.8

Routes call `screen` (texts), `screen_images` (output pictures), `screen_audio` (speech: transcribe, then
screen) and feed streamed text to an `OutputGuard`: one line each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import symusic
import tomllib

from genloom.data.moderation import CATEGORIES
from genloom.errors import GenloomError
from genloom.safety.moderation import MODEL, moderate, moderate_parts

MODES = ("block", "flag", "off")
DEFAULT_MODE = "block"  # a fresh `genloom serve` refuses harmful prompts and outputs (README: Moderation)
CODE = "content_policy_violation"
FINISH = "content_filter"
CHECK_EVERY = 24  # characters of streamed output between checks (and at each sentence end, and at the end)
SENTENCE_END = tuple(".!?。！？\n")
MIN_SENTENCE = 12  # a sentence end triggers a check once the text is this long (fragments score poorly)
KEYS = ("mode", "thresholds", "model")

log = logging.getLogger("genloom.safety")


@dataclass(frozen=True)
class Policy:
    mode: str = DEFAULT_MODE
    thresholds: dict = field(default_factory=dict)  # category -> threshold, over the classifier's tuned ones
    model: str = MODEL
    source: str = "default"  # the file it came from

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def describe(self) -> str:
        th = ", ".join(f"{k}={v}" for k, v in sorted(self.thresholds.items())) or "the tuned ones"
        return f"moderation {self.mode} ({self.model}; thresholds: {th}; policy: {self.source})"


class ContentBlocked(GenloomError):
    """A prompt or an output the policy refuses; the server answers 400 with code content_policy_violation."""

    def __init__(self, where: str, categories: list[str], param: str | None = None):
        self.where, self.categories, self.param = where, categories, param
        what = "prompt" if where == "input" else "generated output"
        super().__init__(f"the {what} was flagged by the moderation policy as {', '.join(categories)}; "
                         f"the request was refused")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise GenloomError(f"unknown moderation mode '{mode}'; choose one of {', '.join(MODES)}")
    return mode


def load_policy(path: str | Path | None = None, mode: str | None = None) -> Policy:
    """The policy file (TOML or JSON) with `mode` on top when given; unknown keys, categories or modes are errors."""
    data: dict = {}
    source = "default"
    if path:
        p = Path(path)
        if not p.is_file():
            raise GenloomError(f"moderation policy file not found: {p}")
        try:
            data = json.loads(p.read_text()) if p.suffix == ".json" else tomllib.loads(p.read_text())
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise GenloomError(f"cannot read the moderation policy {p}: {e}") from None
        if not isinstance(data, dict):
            raise GenloomError(f"the moderation policy {p} must be a table/object with {', '.join(KEYS)}")
        source = str(p)
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise GenloomError(f"unknown key '{unknown[0]}' in the moderation policy {source}; choose from {', '.join(KEYS)}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise GenloomError(f"'thresholds' in {source} must map categories to numbers")
    for cat, value in thresholds.items():
        if cat not in CATEGORIES:
            raise GenloomError(f"unknown moderation category '{cat}' in {source}; choose one of {', '.join(CATEGORIES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise GenloomError(f"the threshold of '{cat}' in {source} must be a number from 0 to 1 (got {value!r})")
    model = str(data.get("model", MODEL))
    return Policy(mode=check_mode(mode or data.get("mode", DEFAULT_MODE)),
                  thresholds={k: float(v) for k, v in thresholds.items()}, model=model, source=source)


def startup(policy: Policy) -> None:
    """Log the policy once at start-up: a warning when moderation is off."""
    if policy.active:
        log.info("%s", json.dumps({"event": "moderation", "mode": policy.mode, "detail": policy.describe()}))
    else:
        log.warning("%s", json.dumps({"event": "moderation", "mode": "off",
                                      "detail": "moderation is OFF: prompts and outputs are not checked"}))


def _flagged(result: dict) -> list[str]:
    return [c for c, v in result["categories"].items() if v]


def _verdict(where: str, route: str, results: list[dict]) -> dict:
    cats = sorted({c for r in results for c in _flagged(r)}, key=CATEGORIES.index)
    top = {c: max((r["category_scores"][c] or 0.0) for r in results) for c in cats}
    return {"where": where, "route": route, "flagged": bool(cats), "categories": cats, "scores": top}


def _act(policy: Policy, verdict: dict, param: str | None) -> dict | None:
    if not verdict["flagged"]:
        return None
    log.warning("%s", json.dumps({"event": "moderation_" + ("blocked" if policy.mode == "block" else "flagged"),
                                  **verdict}, ensure_ascii=False))
    if policy.mode == "block":
        raise ContentBlocked(verdict["where"], verdict["categories"], param)
    return verdict


def screen(policy: Policy | None, texts: list[str], *, where: str = "input", route: str = "",
           param: str | None = "prompt") -> dict | None:
    """Moderate texts under the policy: None when off or clean; block raises ContentBlocked; flag returns the
    verdict (where, route, categories, scores) for the caller to record beside the output."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if policy is None or not policy.active or not texts:
        return None
    return _act(policy, _verdict(where, route, moderate(texts, policy.model, policy.thresholds)), param)


def screen_images(policy: Policy | None, images: list[bytes], *, route: str = "", where: str = "output") -> dict | None:
    """The NSFW check of pictures (NudeNet -> sexual) under the policy, as `screen`."""
    if policy is None or not policy.active or not images:
        return None
    results = [moderate_parts([], [img], policy.model, policy.thresholds) for img in images]
    return _act(policy, _verdict(where, route, results), None)


def screen_audio(policy: Policy | None, audio: bytes, transcribe: Callable[[bytes], str], *, where: str = "input",
                 route: str = "", param: str | None = "file") -> dict | None:
    """Speech: transcribe (the caller's ASR, e.g. genloom.pipelines.asr), then screen the text."""
    if policy is None or not policy.active:
        return None
    return screen(policy, [transcribe(audio)], where=where, route=route, param=param)


def midi_texts(data: bytes | None) -> list[str]:
    """The words a MIDI file carries (track names, markers, lyrics): what a music route screens."""
    if not data:
        return []
    try:
        score = symusic.Score.from_midi(data)  # as written: genloom.data.music's reader renames the tracks
    except Exception:
        return []
    texts = [str(getattr(m, "text", "")) for m in getattr(score, "markers", [])]
    for track in score.tracks:
        texts.append(str(track.name))
        texts += [str(getattr(ly, "text", "")) for ly in getattr(track, "lyrics", [])]
    return [t for t in texts if t.strip()]


def merge(*verdicts: dict | None) -> list[dict] | None:
    """The verdicts worth recording (flag mode), or None."""
    kept = [v for v in verdicts if v]
    return kept or None


class OutputGuard:
    """Moderation of streamed output as it grows: every CHECK_EVERY new characters, at a sentence end (past
    MIN_SENTENCE characters) and at the finish. In block mode a flagged choice is stopped: its event is replaced by
    an empty one whose finish_reason is "content_filter", and its later events are dropped; in flag mode the
    verdict is kept for the history. `due` is cheap (the event loop calls it per token); `step` runs the check."""

    def __init__(self, policy: Policy, route: str):
        self.policy, self.route = policy, route
        self.checked: dict[int, int] = {}
        self.stopped: set[int] = set()
        self.flags: list[dict] = []

    def due(self, i: int, text: str, ev) -> bool:
        if i in self.stopped:
            return True
        new = len(text) - self.checked.get(i, 0)
        return bool(text.strip()) and (ev.finish_reason is not None or new >= CHECK_EVERY
                                       or (new > 0 and len(text) >= MIN_SENTENCE and text.rstrip(" ").endswith(SENTENCE_END)))

    def step(self, i: int, text: str, ev):
        """The event to pass on for choice i whose whole text is now `text` (None: choice i was stopped)."""
        if i in self.stopped:
            return None
        self.checked[i] = len(text)
        try:
            verdict = screen(self.policy, [text], where="output", route=self.route, param=None)
        except ContentBlocked:
            self.stopped.add(i)
            return replace(ev, text="", finish_reason=FINISH)
        if verdict and verdict["categories"] not in [f["categories"] for f in self.flags]:
            self.flags.append(verdict)
        return ev


def output_guard(policy: Policy | None, route: str) -> OutputGuard | None:
    """The guard of a text route's output, or None when the policy checks nothing."""
    return OutputGuard(policy, route) if policy is not None and policy.active else None
