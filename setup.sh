#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the CPU build of PyTorch and jax-td3 with every
# extra ([all]; JAX training alone needs none of them, not even PyTorch: pip install '.[envs]').
# Set TORCH_SPEC to install another PyTorch (e.g. a CUDA build, see README.md).
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# PyTorch first, pinned: the torch extra's requirement (torch>=2.1, part of [all]) is then already
# satisfied, so pip does not replace it with the newest CUDA build (several GB) on a CPU machine.
.venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all]"
