"""Grounded chat under other watermark keys: the chat set's served replies (copy-through included) decoded with
the green-list watermark of several keys, beside the bench key's figure of bench/grounded.py.

An installation marks text with its own key, and the green-list bias (delta 2.0) can pull a copy off its passage
where the copy is not sure enough; this shows how much the chat figures move with the key. Keys: 32 bytes of
(17 k mod 256), k = 1 .. --keys. Prompts, passages and decoding as bench/grounded.py's grounded rows.

    python3 bench/grounded_keys.py [--keys 5] [--grounded models/chat-kb]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grounded as bench  # noqa: E402
from common import report  # noqa: E402

from genloom.checkpoints import load_model  # noqa: E402
from genloom.embeddings import embed  # noqa: E402
from genloom.knowledge import KnowledgeBases, read_source  # noqa: E402
from genloom.knowledge.grounding import CUT, Grounding  # noqa: E402
from genloom.metrics.textgen import chrf, semantic_similarity  # noqa: E402
from genloom.safety.watermark import Secret, Watermarks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grounded", default=str(bench.ROOT / "models" / "chat-kb"))
    ap.add_argument("--keys", type=int, default=5)
    ap.add_argument("--kb-dir", default=str(bench.ROOT / "bench" / "results" / "kb"))
    args = ap.parse_args()
    kbs = KnowledgeBases(args.kb_dir)
    kbs.update("chatterbot", read_source("chatterbot"), drop_missing=True)
    kb, g, lm = kbs.get("chatterbot"), Grounding(), load_model(args.grounded)
    items = bench.chat_items(0)
    hits = [kb.search(it["question"], k=g.k, mode="hybrid", vector=v)
            for it, v in zip(items, embed([it["question"] for it in items]))]
    passages, prompts = bench.fitted(lm, items, [[h.passage.prompt_text() for h in hs] for hs in hits], g)
    refs = [it["reference"] for it in items]
    rows = []
    for k in range(1, args.keys + 1):
        outs = bench.complete(lm, prompts, Watermarks(Secret(bytes([17 * k % 256]) * 32)))
        model = [o.text.strip() for o in outs]
        served = bench.served(outs, passages, g)
        rows.append({"bench": "grounded-watermark-keys", "set": "chat", "key": k, "questions": len(items),
                     "chrf": round(chrf([h or "." for h in served], refs)["chrf"], 2),
                     "minilm": round(semantic_similarity(served, refs)["similarity"], 4),
                     "chrf_model_only": round(chrf([h or "." for h in model], refs)["chrf"], 2),
                     "copied_through": sum(o.stop_reason == CUT for o in outs)})
    report("grounded_keys", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
