#!/usr/bin/env bash
# Create (or refresh) the project-local virtual environment .venv with the
# pinned OpenMMLab stack and mmhire itself, editable.
#
#   bash tools/setup_env.sh        # then: source .venv/bin/activate
#
# Idempotent: when nothing it installs from has changed and the stack imports,
# it returns in seconds. mmcv 2.1.0 has no wheel on the package index; a
# prebuilt one is taken from ../shared/wheels when that folder exists, and
# otherwise mmcv is built from source with its CPU ops (about 16 minutes on
# two cores).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMHIRE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
STAMP=$VENV/.mmhire-setup

if [ -d "$ROOT/../shared/wheels" ]; then
  export PIP_FIND_LINKS="${PIP_FIND_LINKS:-} $(cd "$ROOT/../shared/wheels" && pwd)"
fi

fingerprint() {
  cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/mmhire/dependencies.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d" " -f1
}

stack_works() {
  "$PY" - <<'EOF' 2>/dev/null
import torch, mmengine, mmcv, mmdet, mmseg, einops, mmhire  # noqa: F401
import onnx, onnxscript, onnxruntime  # noqa: F401  (tools/deployment)
from mmcv.ops import nms, RoIAlign  # noqa: F401  (compiled ops present)
assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] && stack_works; then
  echo "mmhire: environment $VENV is up to date."
  exit 0
fi

[ -x "$PY" ] || python3 -m venv "$VENV"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# torch first and alone; every later step is constrained to this one build.
"${PIP[@]}" -r "$ROOT/requirements/torch.txt"
CONSTRAINT=(-c "$ROOT/requirements/torch.txt")

if ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
  if ! "${PIP[@]}" "${CONSTRAINT[@]}" --only-binary=mmcv mmcv==2.1.0 2>/dev/null; then
    echo "mmhire: no mmcv 2.1.0 wheel found; building it from source with its ops (about 16 minutes on two cores)."
    "${PIP[@]}" "${CONSTRAINT[@]}" "setuptools<70" wheel ninja psutil
    MMCV_WITH_OPS=1 "${PIP[@]}" "${CONSTRAINT[@]}" --no-build-isolation --no-binary=mmcv mmcv==2.1.0
    # torch itself asks for a newer setuptools than the mmcv build tolerates.
    "${PIP[@]}" "${CONSTRAINT[@]}" "setuptools>=77.0.3"
  fi
fi

"${PIP[@]}" "${CONSTRAINT[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" "${CONSTRAINT[@]}" --no-deps -e "$ROOT"

stack_works || { echo "mmhire: the environment was installed but does not import; see the pip output above." >&2; exit 1; }
fingerprint > "$STAMP"
echo "mmhire: environment ready in $VENV (source $VENV/bin/activate)."
