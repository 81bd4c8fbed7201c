#!/usr/bin/env bash
# Install the project with its test tools into .venv and run the whole test suite (ruff, then pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
bash scripts/install.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/python scripts/check_imports.py
.venv/bin/python -m pytest "$@"
