#!/usr/bin/env bash
# Install the package with its test tools and data, then run the default test suite
# (slow and GPU tests are opt-in: pytest -m slow, pytest -m gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
"${PYTHON:-python3}" -m pytest -q "$@"
