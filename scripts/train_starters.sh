#!/usr/bin/env bash
# Reproduce the bundled models: `bash scripts/train_starters.sh kjv` (or tang, fmnist-features,
# mnist-features; no argument: all). Each trains with configs/NAME.toml (data prepared on first use),
# exports the best weights with a model card, and writes eval.json and loss.png beside them.
# Text starters ship in float16; the image feature networks in float32 (FID features are sensitive).
set -euo pipefail
cd "$(dirname "$0")/.."
for n in ${@:-kjv tang fmnist-features mnist-features}; do
  rm -rf "runs/$n"
  genloom train --config "configs/$n.toml"
  family=$(python3 -c "import tomllib;print(tomllib.load(open('configs/$n.toml','rb')).get('family','gpt'))")
  dtype=float16; [ "$family" = classifier ] && dtype=float32
  genloom export "runs/$n" --out "models/$n" --dtype "$dtype" --name "genloom starter: $n" \
    --command "bash scripts/train_starters.sh $n"
  if [ "$family" = gpt ]; then
    data=$(python3 -c "import tomllib;print(tomllib.load(open('configs/$n.toml','rb'))['data']['dir'])")
    genloom eval --model "models/$n" --data "$data" > "models/$n/eval.json"
  else
    genloom eval --model "models/$n" > "models/$n/eval.json"   # held-out accuracy, overall and per class
  fi
  cp "runs/$n/loss.png" "models/$n/loss.png"
done
