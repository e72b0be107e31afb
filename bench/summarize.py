"""Print bench/results/*.jsonl as one markdown table (pasted into bench/RESULTS.md)."""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main():
    print("| case | unit | genloom | peer | ratio |")
    print("|---|---|---:|---:|---:|")
    for name in ("decode", "train_step", "quality"):
        path = RESULTS / f"{name}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            print(f"| {r['case']} | {r['unit']} | {r['genloom']} | {r['peer']} | {r['ratio']} |")


if __name__ == "__main__":
    main()
