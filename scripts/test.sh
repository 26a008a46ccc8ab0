#!/usr/bin/env bash
# Command 2: install what the tests need and run the whole suite.
#  - system packages (lavapipe for the wgpu tests)
#  - NVIDIA's NVRTC from PyPI (no GPU needed) so the CUDA kernels really
#    compile to PTX: TETE_REQUIRE_NVRTC=1 makes its absence a failure
#  - a local PostgreSQL (Debian's package, loopback only), so the storage
#    tests run against it as well as SQLite: TETE_REQUIRE_POSTGRES=1 makes
#    its absence a failure
#  - the default models, fetched and verified into $TETE_HOME (cached: a
#    second run downloads nothing)
#  - aiortc (PyPI) in a venv under $TETE_HOME: the WebRTC peer the edge's
#    tests talk to (its PyAV also reads the recordings back)
#  - moto (PyPI) in a venv under $TETE_HOME: an S3-compatible server on
#    127.0.0.1 for the recordings kept in a bucket
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/setup-system.sh

nvrtc="$TETE_HOME/nvrtc"
if ! ls "$nvrtc"/nvidia/cuda_nvrtc/lib/libnvrtc.so.* >/dev/null 2>&1; then
  echo "installing NVRTC (nvidia-cuda-nvrtc-cu12) into $nvrtc"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$nvrtc" nvidia-cuda-nvrtc-cu12==12.6.77
fi
export LD_LIBRARY_PATH="$nvrtc/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TETE_REQUIRE_NVRTC=1

# A WebRTC peer no one here wrote, for the edge's tests: aiortc in its own venv.
webrtc_venv="$TETE_HOME/venvs/webrtc"
if ! "$webrtc_venv/bin/python3" -c "import aiortc" >/dev/null 2>&1; then
  echo "installing aiortc into $webrtc_venv"
  python3 -m venv "$webrtc_venv"
  "$webrtc_venv/bin/python3" -m pip install --quiet --disable-pip-version-check aiortc==1.16.0 numpy
fi
export TETE_TEST_PYTHON="$webrtc_venv/bin/python3"

s3_venv="$TETE_HOME/venvs/s3"
if ! "$s3_venv/bin/python3" -c "import moto.server" >/dev/null 2>&1; then
  echo "installing moto into $s3_venv"
  python3 -m venv "$s3_venv"
  "$s3_venv/bin/python3" -m pip install --quiet --disable-pip-version-check "moto[server]==5.1.18"
fi
export TETE_TEST_MOTO="$s3_venv/bin/moto_server"

TETE_TEST_POSTGRES_URL=$(scripts/postgres.sh)
export TETE_TEST_POSTGRES_URL TETE_REQUIRE_POSTGRES=1

cargo build --locked -p tete-server
target/debug/tete models fetch
# Beyond the defaults, the tests also load the multilingual recogniser and
# the larger LLM option.
target/debug/tete models fetch whisper-base
target/debug/tete models fetch qwen2.5-coder-0.5b-instruct

# The whole workspace with the `cuda` feature (cudarc, NVRTC loaded at run
# time), then the unit tests once more without it, for the default build's
# paths (whole workspace, so dependencies keep the same features and are reused).
cargo test --locked --workspace --all-targets --features tete-engine/cuda
cargo test --locked --workspace --lib
