#!/usr/bin/env bash
# Create .venv with the pinned requirements, then ImageBind without its dependencies (they would pull
# torchvision, torchaudio, timm and a CUDA torch; our own preprocessing replaces its data.py), then this project
# itself, editable, so `nextgpt` imports from any folder.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q --no-deps imagebind-unofficial==0.1.1
.venv/bin/pip install -q "setuptools>=68"
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
