#!/usr/bin/env bash
# Reproduce the bundled models: `bash scripts/train_starters.sh kjv` (or tang, chat, chat-kb, chorales, fmnist-features,
# mnist-features, fmnist-diffusion, fmnist-text2img, fmnist-dcgan, fmnist-vae, fmnist-vqvae, moderation; no argument: all). Each trains
# with configs/NAME.toml (data prepared on first use), exports the best weights with a model card, and
# writes eval.json, loss.png (and samples.png for image generators) beside them; a text-to-image starter also
# class_following.json (scripts/class_following.py) and its section of the card. fmnist-vqvae also encodes
# Fashion-MNIST into code records, trains its GPT prior (configs/fmnist-vqprior.toml) and attaches it.
# Text starters and image generators ship in float16; the feature networks in float32 (FID is sensitive).
# chat-kb (grounded chat) also writes its grounding.json and builds the knowledge base it is served with: all
# chatterbot dialogues, in genloom-data/kb/chatterbot (`genloom serve -m models/chat-kb`).
# voice (text to speech): the Piper joe voice (models/voice-joe, setup.sh) reads 900 sentences into
# genloom-data/voice-joe-distilled (`genloom distill-voice`, resumable), a FastSpeech 2 style model trains on them
# (configs/voice.toml, 26 min on 1 thread of 2 shared cores), models/voice-joe-fs2 gets its loss curve and sample WAVs,
# and bench/voice.py measures its WER and writes its card. Not in the default list (teacher voice needed, ~40 min).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = voice ]; then
  genloom distill-voice -m models/voice-joe --out genloom-data/voice-joe-distilled -n 900 --heldout 120
  rm -rf runs/voice models/voice-joe-fs2
  genloom train --config configs/voice.toml
  genloom export runs/voice --out models/voice-joe-fs2 --dtype float16
  cp runs/voice/loss.png runs/voice/samples-0.wav runs/voice/samples-0.png runs/voice/samples-1.wav models/voice-joe-fs2/
  # Whisper WER on 100 held-out sentences beside the teacher's; writes the card (README.md) with the figures
  python3 bench/voice.py --student models/voice-joe-fs2 --card
  exit 0
fi
for n in ${@:-kjv tang chat chat-kb chorales fmnist-features mnist-features fmnist-diffusion fmnist-text2img fmnist-dcgan fmnist-vae fmnist-vqvae moderation}; do
  rm -rf "runs/$n"
  genloom train --config "configs/$n.toml"
  family=$(python3 -c "import tomllib;print(tomllib.load(open('configs/$n.toml','rb')).get('family','gpt'))")
  dtype=float16; [ "$family" = classifier ] || [ "$family" = textclf ] && dtype=float32
  rm -rf "models/$n"
  genloom export "runs/$n" --out "models/$n" --dtype "$dtype" --name "genloom starter: $n" \
    --command "bash scripts/train_starters.sh $n"
  cp "runs/$n/loss.png" "models/$n/loss.png"
  case "$family" in
    gpt)
      data=$(python3 -c "import tomllib;print(tomllib.load(open('configs/$n.toml','rb'))['data']['dir'])")
      genloom eval --model "models/$n" --data "$data" > "models/$n/eval.json"
      if python3 -c "import json,sys;sys.exit(json.load(open('$data/meta.json')).get('modality')!='music')"; then
        # music: an 8-bar sample to hear and see beside the weights (sample.mid, sample.mp3, sample.png)
        genloom generate --model "models/$n" --bars 8 --seed 0 --temperature 0.9 --out "models/$n" --mp3
        for f in "models/$n"/music-0.*; do mv "$f" "models/$n/sample.${f##*.}"; done
        rm -f "models/$n/sample.wav"
      elif [ "$n" = chat-kb ]; then
        echo '{"kb": "chatterbot", "k": 3, "passage_chars": 240, "min_cosine": 0.35}' > "models/$n/grounding.json"
        genloom kb create chatterbot --from chatterbot
        cat >> "models/$n/README.md" <<'CARD'

## Grounded chat

Trained on prompts laid out as `genloom.knowledge.grounding` lays them out for the server: the earlier turns,
three `Doc: ...` lines (retrieved passages, each cut to 240 characters), then `User: question` and `Bot: reply`.
Examples (`genloom data support-grounded`, genloom/knowledge/examples.py):

- every user turn of the 1,925 training-side chatterbot dialogues, searched (hybrid BM25 + MiniLM) in a
  knowledge base of those dialogues only (a passage each); validation turns in a base that holds every dialogue,
  as the served one does;
- "What does the --NAME option of CMD do?" for up to 6 options of each of 300 installed section-1 man pages of commands on PATH
  (an even spread of their sorted names; the 50 pages of the benchmark's docs set, genloom.knowledge.manpages.HELD_OUT, left out),
  answered by the option's first sentence, searched in a base of the training-side pages (a passage per option);
- 8,000 synthetic copy examples: Doc lines of random fortune and KJV sentences shaped as dialogues or as option
  sections of made-up commands, the reply the answering Doc's answer copied exactly (its content cannot be
  learnt by heart, so what is learnt is the rule: find the Doc that answers, copy its answer).

The Doc lines are the question's retrieved neighbours in retrieval order, the answer's own passage where retrieval
ranks it (first for most questions, as when served; put in at a random rank when retrieval misses it); in 3% of
examples it is left out and the reply to learn is "I could not find that in the documents I have.". A passage that
holds the same user turn with another reply (the chatterbot corpus repeats questions) is never a distractor. The
reply to learn is the answer as its Doc line shows it: on one line, and where the line (240 characters) cuts the
answer, its shown part followed by " ..."; served, a reply that writes " ..." there goes on with the rest of the
answer from the passage (`genloom.knowledge.grounding.copy_through`). Loss on the reply tokens only
(`data.loss_mask`). The man pages are those Debian installs on the training machine
(`meta.json` of the data folder lists them), so another machine may pick other pages.

Model: llama layout (RoPE, RMSNorm, SwiGLU), 4 layers, 4 heads, 128 wide, 384-token window, with a copy head
(`model.pointer`, genloom.models.gpt.Pointer: the pointer sentinel mixture of Merity et al. 2017): each position can
point at an earlier one and copy the token that followed it, scored by a learnt match plus learnt exact-match terms
(the same last 1, 2, ..., 8 tokens: `model.pointer_match`), against a sentinel that leaves the rest to the vocabulary. Four
earlier recipes without it never learnt to copy in the time a shared 2-core machine gave (bench/RESULTS.md). The
copy head is genloom's own: `export-hf` and `export-gguf` refuse this model (GPT-2's format and llama.cpp have no
such head), and `--compile` decodes it eagerly, with a warning.

`grounding.json` names the base it answers from: the knowledge base of all chatterbot dialogues, built by the
command above; `genloom serve` builds it in its data directory, in the background, when it is missing (grounded
requests get a 503 "being built" until it is ready; start-up does not wait):

```
genloom serve -m models/chat-kb            # grounding.json: {"kb": "chatterbot", ...}
```

A passage is shown to the model as a reply it can copy (`Passage.prompt_text`): a question/answer pair of a JSONL
knowledge base as `Doc: User: question Bot: answer`, a Markdown section as a reply to its heading (`Doc: User:
Errors Bot: ...`), plain text after `Bot:`; dialogues and man-page option sections as they are.

Figures: bench/RESULTS.md, "Grounded chat", fifth attempt (`python3 bench/grounded.py`; greedy, at most 48 new
tokens, with the default text watermark / without it). Against returning the top passage verbatim, the goal is met
on the docs set (chrF 77.9 / 83.2 vs 67.7, MiniLM 0.853 / 0.891 vs 0.685) and on chat MiniLM (0.654 / 0.746 vs
0.508), NOT on chat chrF (27.5 / 29.5 vs 61.0): sacrebleu's corpus chrF is recall-weighted, and one reference of
1,087 characters (a code example; 42% of the set's reference characters) counts for more than the rest, while a
reply is at most 48 tokens from a passage cut to 240 characters. Per reply the starter is ahead (watermark off:
mean sentence chrF 65.4 vs 47.8; corpus chrF without that reference 47.2 vs 44.6).

Limits: trained with `--set train.threads=1` (two runs shared the two cores) and stopped by the 28-minute box at
step 1,899 of 3,000 (best checkpoint step 1,800, validation loss on replies 0.305 nats/token). It leans on
retrieval's order: among three passages put in a random order it picks the answering one about as often as chance
would (bench/RESULTS.md), so its answer is as good as the top passage retrieval finds; replies sometimes end a few
tokens early ("Switz" for "Switzerland"), where the vocabulary's end-of-text outweighs the copy.
CARD
      fi ;;
    textclf)
      # moderation: thresholds per language from the validation split, then the held-out figures on its card
      python3 -c "import json; from genloom.safety.moderation import tune; print(json.dumps(tune('models/$n', 'genloom/data/assets/moderation')))" > /dev/null
      python3 bench/moderation.py > "models/$n/eval.jsonl"
      python3 scripts/moderation_card.py "models/$n" ;;
    classifier)
      genloom eval --model "models/$n" > "models/$n/eval.json" ;;  # held-out accuracy, overall and per class
    *)
      if [ "$family" = vqvae ]; then
        rm -rf data/fmnist-codes runs/fmnist-vqprior
        genloom codes --model "models/$n" --data fashion-mnist --out data/fmnist-codes
        genloom train --config configs/fmnist-vqprior.toml
        genloom attach-prior --model "models/$n" --prior runs/fmnist-vqprior
        cp runs/fmnist-vqprior/loss.png "models/$n/prior-loss.png"
      fi
      tmp=$(mktemp -d)
      prompts=()  # a text-conditional model: a prompt per class; a class-conditional GAN/prior: classes in turn
      if grep -q '^captions' "configs/$n.toml"; then
        for c in "t-shirt/top" trouser pullover dress coat sandal shirt sneaker bag "ankle boot"; do
          prompts+=(-p "a photo of a $c"); done
        prompts+=(--guidance 3)
      fi
      genloom generate --model "models/$n" -n 16 --seed 0 --out "$tmp" "${prompts[@]}"
      cp "$tmp/0-grid.png" "models/$n/samples.png"
      rm -rf "$tmp"
      genloom eval --model "models/$n" -n 1000 > "models/$n/eval.json"  # FID (with its floor), KID, P/R
      if grep -q '^captions' "configs/$n.toml"; then  # text-to-image: class-following on held-out phrasings
        python3 scripts/class_following.py --model "models/$n"; fi ;;
  esac
done
