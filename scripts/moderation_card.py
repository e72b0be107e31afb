"""Append the moderation classifier's thresholds and held-out figures (bench/moderation.py's eval.jsonl) to its card."""

import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
th = json.loads((folder / "thresholds.json").read_text())
rows = [json.loads(x) for x in (folder / "eval.jsonl").read_text().splitlines() if x.strip()]
lines = ["", "## Moderation", "",
         "Data: `genloom/data/assets/moderation` (its README.md is the datasheet: templates and hand-written lines in "
         "English and Chinese, benign hard negatives, KJV / fortunes / man pages / chatterbot / Tang poems / Chinese "
         "sayings lines; split by template). Thresholds: " + th["protocol"] + ".", "",
         "| language | threshold | per-category thresholds | validation recall | validation FPR |", "|---|---|---|---|---|"]
for lang, v in th["validation"].items():
    per = th["thresholds"][lang].values()
    lines.append(f"| {lang} | {v['threshold']} | {min(per)}..{max(per)} | {v.get('val_recall', '-')} | "
                 f"{v.get('val_fpr', '-')} |")
lines += ["", "Held-out test split (version 3: hand-written lines of genloom/safety/moderation_heldout.py, never used for "
          "training or thresholds), `python3 bench/moderation.py`:", "",
          "| model | language | precision | recall | FPR | latency, 1 text (median) |", "|---|---|---|---|---|---|"]
for r in rows:
    if "model" not in r:
        continue
    for lang in ("en", "zh"):
        f = r[lang]
        lines.append(f"| {r['model']} | {lang} | {f['precision']} | {f['recall']} | {f['fpr']} | "
                     f"{r['latency_1_text']['median_ms']} ms |")
lines += ["", "A small classifier on a small templated set: a first line of defence, not a guarantee."]
with open(folder / "README.md", "a", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
