"""Grounded chat: retrieval recall, reply quality with and without retrieval, and the latency retrieval adds.

Two held-out sets:
  chat  the held-out chat set of `genloom eval --evalset chat` (user turns of the validation-side chatterbot
        dialogues, pairs also in a training dialogue dropped), searched in the knowledge base the grounded
        starter is served with: all chatterbot dialogues (`genloom kb create chatterbot --from chatterbot`);
        the answer's passage is one holding both the user turn and the reference reply word for word.
  docs  bench/data/docs-questions.jsonl over bench/data/docs (man pages; bench/make_docs.py writes both); the
        answer's passage is the option's own section (file and heading).
Retrieval: recall@5 of the answer's passage for bm25, embeddings and hybrid (genloom.knowledge.KnowledgeBase).
Replies, greedy, as `genloom serve` gives them with its default limits: the prompt keeps a quarter of the context
for the reply (the worst passages leave the prompt first when it does not fit), the reply may use the rest of the
context, and it stops at a new line (the bench's) or at the server's stop strings; with the text watermark that
`genloom serve` and `genloom generate` apply by default (green list, gamma 0.25, delta 2.0; a fixed bench key, not
an installation's), and again without it (`watermark: off` rows: what `--watermark off` gives):
  grounded   the grounded starter (models/chat-kb) with the top 3 hybrid passages in the prompt
             (genloom.knowledge.grounding's layout); when no passage reaches min_cosine it answers NOT_FOUND,
             as the server does; a reply that copies a Doc line up to its cut goes on with the rest of that
             passage's answer (grounding.copy_through, as the server does)
  grounded-model  the same replies without copy_through: the model's own tokens only
  chat       today's chat starter (models/chat), no retrieval
  top-passage  the best hybrid passage, verbatim (flattened to one line)
Scores: sacrebleu BLEU and chrF, MiniLM cosine to the reference, key facts: the share of replies where every
content word of the reference (lower-cased, English stop words out) is in the reply and in its cited passages
(none for `chat`, which cites nothing); replies to references with no content word are left out of that share.
Latency: in-process, 16 threads each calling KnowledgeBases.search (query embedding + BM25 + FAISS + fusion, k=3)
in a loop; per-request p50 and p99, beside one thread alone. Not through the server.

    python3 bench/grounded.py [--grounded models/chat-kb] [--chat models/chat] [--limit 0]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
from common import report  # noqa: E402

from genloom.checkpoints import load_model  # noqa: E402
from genloom.data.evalsets import chat_eval_set  # noqa: E402
from genloom.embeddings import embed  # noqa: E402
from genloom.knowledge import KnowledgeBases, read_source  # noqa: E402
from genloom.knowledge.examples import grounded_prompt, turns_of  # noqa: E402
from genloom.knowledge.grounding import CUT, NOT_FOUND, STOP, Grounding, copy_through, doc_line, fitting  # noqa: E402
from genloom.metrics.textgen import bleu, chrf, semantic_similarity  # noqa: E402
from genloom.safety.watermark import Secret, Watermarks  # noqa: E402
from genloom.sample import SamplingParams, generate  # noqa: E402

DOCS = ROOT / "bench" / "data"
MODES = ("bm25", "embeddings", "hybrid")
STOPWORDS = set(STOPWORDS_EN)
_WORD = re.compile(r"[a-z0-9]+")
BENCH_STOP = [*STOP, "\nUser:", "\n"]  # the server's stops (grounded chat), then the bench's new line
MARKS = {"on": Watermarks(Secret(bytes(range(32)))), "off": Watermarks(None)}  # the bench key of bench/watermark.py


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def chat_items(limit: int) -> list[dict]:
    """The held-out chat set as items: history, question, reference, and how to know the answer's passage."""
    out = []
    for p in chat_eval_set(unseen_only=True, limit=limit):
        turns = turns_of(p["prompt"][: -len("\nBot:")])
        q = turns[-1][len("User: "):].strip()
        ref = p["reference"].strip()
        out.append({"id": p["id"], "history": turns[:-1], "question": q, "reference": ref,
                    "plain_prompt": p["prompt"],
                    "is_answer": lambda ps, q=q, ref=ref: f"User: {q}" in ps.text and f"Bot: {ref}" in ps.text})
    return out


def docs_items(limit: int) -> list[dict]:
    rows = [json.loads(x) for x in (DOCS / "docs-questions.jsonl").read_text().splitlines() if x.strip()]
    rows = rows[:limit] if limit else rows
    return [{"id": r["id"], "history": [], "question": r["question"], "reference": r["reference"],
             "plain_prompt": f"User: {r['question']}\nBot:",
             "is_answer": lambda ps, r=r: ps.source == r["source"] and ps.heading == r["heading"]} for r in rows]


def recall(kb, items: list[dict], vectors: np.ndarray, k: int = 5) -> dict:
    out = {}
    for mode in MODES:
        hits = [kb.search(it["question"], k=k, mode=mode, vector=None if mode == "bm25" else v)
                for it, v in zip(items, vectors)]
        out[mode] = float(np.mean([any(it["is_answer"](h.passage) for h in hs) for it, hs in zip(items, hits)]))
    return out


def room(lm) -> int:
    """The prompt's share of the context: the server keeps a quarter for the reply (completions._fit)."""
    return lm.config.block_size - lm.config.block_size // 4


def complete(lm, prompts: list[str], marks: Watermarks) -> list:
    """Greedy replies (genloom.sample.Completion); a prompt longer than its room keeps its end (the question and
    the cue), as a last resort."""
    procs = marks.processors(lm.config.vocab_size)
    ids = [lm.tokenizer.encode(p)[-room(lm):] for p in prompts]
    outs = []
    for i in range(0, len(ids), 16):
        rows = ids[i: i + 16]
        sp = SamplingParams(max_new_tokens=lm.config.block_size - max(map(len, rows)) + 1, temperature=0.0,
                            stop=BENCH_STOP)  # the server's max_new_tokens: the rest of the context
        outs += generate(lm.model, lm.tokenizer, [lm.tokenizer.decode(r) for r in rows], sp, procs)
    return outs


def fitted(lm, items: list[dict], passages: list[list[str]], g: Grounding) -> tuple[list[list[str]], list[str]]:
    """The passages each grounded prompt holds (the server's rule, grounding.fitting) and the prompts."""
    kept = []
    for it, ps in zip(items, passages):
        n = fitting(ps, lambda shown, it=it: grounded_prompt(it["history"], it["question"], shown, g),
                    lambda p: len(lm.tokenizer.encode(p)), room(lm))
        kept.append(ps[:n])
    return kept, [grounded_prompt(it["history"], it["question"], ps, g) for it, ps in zip(items, kept)]


def served(outs: list, passages: list[list[str]], g: Grounding) -> list[str]:
    """The replies as the server returns them: one that stopped at a Doc line's cut goes on (copy_through)."""
    return [copy_through(o.text.strip(), ps, g) if o.stop_reason == CUT else o.text.strip()
            for o, ps in zip(outs, passages)]


def scores(hyps: list[str], refs: list[str], cited: list[list[str]] | None) -> dict:
    hyps = [h if h.strip() else "." for h in hyps]  # an empty reply scores as nothing, not as an error
    facts = [content_words(r) for r in refs]
    keyed = [i for i, f in enumerate(facts) if f]
    if cited is None:
        key = 0.0
    else:
        key = float(np.mean([facts[i] <= content_words(hyps[i]) and facts[i] <= content_words(" ".join(cited[i]))
                             for i in keyed]))
    return {"bleu": round(bleu(hyps, refs)["bleu"], 2), "chrf": round(chrf(hyps, refs)["chrf"], 2),
            "minilm": round(semantic_similarity(hyps, refs)["similarity"], 4), "key_facts": round(key, 4),
            "key_facts_in_reply": round(float(np.mean([len(facts[i] & content_words(hyps[i])) / len(facts[i])
                                                       for i in keyed])), 4)}


def replies(kb, items: list[dict], vectors: np.ndarray, args, g: Grounding) -> list[dict]:
    hits = [kb.search(it["question"], k=g.k, mode="hybrid", vector=v) for it, v in zip(items, vectors)]
    found = [bool(hs) and max(h.cosine for h in hs) >= g.min_cosine for hs in hits]
    lm, chat_lm = load_model(args.grounded), load_model(args.chat)
    passages, prompts = fitted(lm, items, [[h.passage.prompt_text() for h in hs] for hs in hits], g)
    top = [doc_line(ps[0], 10_000)[len("Doc: "):].strip() if ps else NOT_FOUND for ps in passages]
    refs = [it["reference"] for it in items]
    rows, examples = [{"system": "top-passage", **scores(top, refs, [ps[:1] for ps in passages])}], {}
    for mark, marks in MARKS.items():
        outs = complete(lm, prompts, marks)
        model = [o.text.strip() if f else NOT_FOUND for o, f in zip(outs, found)]
        grounded = [r if f else NOT_FOUND for r, f in zip(served(outs, passages, g), found)]
        chat = [o.text.strip() for o in complete(chat_lm, [it["plain_prompt"] for it in items], marks)]
        copied = sum(a != b for a, b in zip(grounded, model))
        rows += [{"system": "grounded", "watermark": mark, "model": args.grounded,
                  **scores(grounded, refs, passages), "not_found": round(1 - float(np.mean(found)), 4),
                  "copied_through": copied},
                 {"system": "grounded-model", "watermark": mark, "model": args.grounded,
                  **scores(model, refs, passages)},
                 {"system": "chat", "watermark": mark, "model": args.chat, **scores(chat, refs, None)}]
        examples[mark] = [{"question": it["question"], "reference": it["reference"], "grounded": a, "chat": b,
                           "top-passage": c} for it, a, b, c in list(zip(items, grounded, chat, top))[:5]]
    return rows, examples


def latency(kbs: KnowledgeBases, name: str, queries: list[str], clients: int = 16, per_client: int = 20) -> dict:
    """Per-request seconds of kbs.search with `clients` threads at once (each cycling through the queries)."""
    kbs.search(name, queries[0], k=3)  # load and warm up
    out = {}
    for n in (1, clients):
        times: list[float] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            mine = []
            for j in range(per_client):
                t0 = time.perf_counter()
                kbs.search(name, queries[(c * per_client + j) % len(queries)], k=3)
                mine.append(time.perf_counter() - t0)
            with lock:
                times.extend(mine)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
        t0 = time.perf_counter()
        [t.start() for t in threads]
        [t.join() for t in threads]
        wall = time.perf_counter() - t0
        out[n] = {"p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
                  "p99_ms": round(float(np.percentile(times, 99)) * 1000, 1), "requests": len(times),
                  "requests_per_s": round(len(times) / wall, 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grounded", default=str(ROOT / "models" / "chat-kb"))
    ap.add_argument("--chat", default=str(ROOT / "models" / "chat"))
    ap.add_argument("--kb-dir", default=str(ROOT / "bench" / "results" / "kb"),
                    help="where the benchmark's knowledge bases are built (re-runs re-embed nothing)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many questions per set (0: all)")
    args = ap.parse_args()
    kbs = KnowledgeBases(args.kb_dir)
    kbs.update("chatterbot", read_source("chatterbot"), drop_missing=True)
    kbs.update("docs", read_source(DOCS / "docs"), drop_missing=True)
    g = Grounding()
    rows, samples = [], {}
    for name, items in (("chat", chat_items(args.limit)), ("docs", docs_items(args.limit))):
        kb = kbs.get("chatterbot" if name == "chat" else "docs")
        vectors = embed([it["question"] for it in items])
        r = recall(kb, items, vectors)
        rows.append({"bench": f"grounded-recall@5-{name}", "questions": len(items), "passages": len(kb.passages),
                     **{f"recall_{m}": round(v, 4) for m, v in r.items()}})
        reply_rows, samples[name] = replies(kb, items, vectors, args, g)
        rows += [{"bench": f"grounded-replies-{name}", "questions": len(items), **row} for row in reply_rows]
    lat = latency(kbs, "chatterbot", [it["question"] for it in chat_items(0)])
    rows.append({"bench": "grounded-retrieval-latency", "kb": "chatterbot", "k": 3, "mode": "hybrid",
                 "where": "in-process threads calling KnowledgeBases.search (not through the server)",
                 **{f"clients_{n}": v for n, v in lat.items()}})
    report("grounded", rows)
    print(json.dumps({"samples": samples}, indent=1, ensure_ascii=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
