"""Print bench/results/*.jsonl as one markdown table (pasted into bench/RESULTS.md)."""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main():
    print("| case | unit | genloom | peer | ratio (best) | ratio (median) | load (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in ("decode", "llamacpp", "train_step", "quality", "metrics", "serve", "serve_replicas"):
        path = RESULTS / f"{name}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("peer") is None or r["case"].startswith("metrics-fid-value"):
                continue
            print(f"| {r['case']} | {r['unit']} | {r['genloom']} | {r['peer']} | {r['ratio']} | "
                  f"{r.get('ratio_median', '—')} | {r.get('loadavg_1m', '—')} |")


if __name__ == "__main__":
    main()
