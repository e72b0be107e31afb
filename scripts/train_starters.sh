#!/usr/bin/env bash
# Reproduce the bundled starter models: `bash scripts/train_starters.sh kjv` (or tang, or both).
# Each trains with its config (data prepared on first use) and exports the best weights in float16.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "${@:-kjv tang}"; do
  for n in $name; do
    rm -rf "runs/$n"
    genloom train --config "configs/$n.toml"
    genloom export "runs/$n" --out "models/$n" --dtype float16 --name "genloom starter: $n" \
      --command "bash scripts/train_starters.sh $n"
    genloom eval --model "models/$n" --data "$(python3 -c "import tomllib;print(tomllib.load(open('configs/$n.toml','rb'))['data']['dir'])")" \
      > "models/$n/eval.json"
    cp "runs/$n/loss.png" "models/$n/loss.png"
  done
done
