#!/usr/bin/env bash
# Install the project into .venv with the given requirements file (CPU torch first, so nothing pulls a GPU build),
# build llama-cpp-python for the instruction sets this machine can run (once; see scripts/build_llama.py),
# then check that the bundled model answers, in a child process.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# Before the requirements: once it is installed, pip leaves the pinned llama-cpp-python alone (its own wheel
# cache would otherwise hand back a build made with other CPU flags).
.venv/bin/python scripts/build_llama.py .venv/bin/python
.venv/bin/python -m pip install -q -r "${1:-requirements.txt}"
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/selectllm doctor
