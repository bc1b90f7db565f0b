#!/usr/bin/env bash
# Set up mmkd_ext from scratch in a virtual environment inside the checkout (.venv), then run the
# digits demo (teacher, student alone, student + each method; 5 seeds).
#
#   bash tools/setup.sh            # install + demo
#   bash tools/setup.sh --no-demo  # install only (what .ci/run does)
#
# mmcv 2.1.0 is compiled from its PyPI source with ops (about 18 min on 2 cores, once): torch 2.14's
# headers need C++20 and mmcv's setup.py hard-codes -std=c++17, so the flag is switched before the
# build. The built wheel is cached in $MMKD_WHEEL_CACHE (default ~/.cache/mmkd_ext/wheels), so a second
# set-up on the same machine takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${MMKD_VENV:-$ROOT/.venv}
CACHE=${MMKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmkd_ext/wheels}
MMCV_VERSION=2.1.0
RUN_DEMO=1
[ "${1:-}" = "--no-demo" ] && RUN_DEMO=0

mkdir -p "$CACHE"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip 'setuptools<81' wheel
pip install -q torch==2.14.1 torchvision==0.29.1 mmengine==0.10.7 ninja

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  wheel=$(ls "$CACHE"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "Building mmcv $MMCV_VERSION with ops (about 18 minutes on 2 cores, cached afterwards)..."
    build=$(mktemp -d)
    pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$build" "mmcv==$MMCV_VERSION"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    grep -q -- '-std=c++17' "$src/setup.py"
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
      pip wheel -q --no-build-isolation --no-deps -w "$CACHE" "$src"
    rm -rf "$build"
    wheel=$(ls "$CACHE"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  fi
  pip install -q "$wheel"
fi

pip install -q -r requirements.txt
# Editable: setup.py links configs/, tools/ and model-index.yml into mmkd_ext/.mim (for mmkd_ext::).
pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import mmkd_ext, mmcv.ops, mmpretrain, mmdet, mmseg, os.path as osp
assert osp.isdir(osp.join(osp.dirname(mmkd_ext.__file__), '.mim', 'configs')), 'no mmkd_ext/.mim'
print('mmkd_ext', mmkd_ext.__version__, 'ready in', '$VENV')"

if [ "$RUN_DEMO" = 1 ]; then
  "$VENV/bin/python" tools/demo.py
fi
