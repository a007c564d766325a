#!/usr/bin/env bash
# One install script for everything (README, Makefile, CI, Dockerfile).
#
#   scripts/install.sh [cpu|cuda] [--deps-only]      (default: cpu)
#
# --deps-only installs the pinned stack but not the project (the Dockerfile uses it to cache the
# heavy dependency layer before the code is copied).
# Creates .venv/ in the repo root, installs the pinned stack in the order that works
# (torchrec last, with --no-deps), installs this project editable, then verifies that torchrec
# imports against the intended fbgemm build. Re-running on a ready venv is a no-op: a stamp
# file records the hash of the inputs and the verification still runs (a few seconds).
# Environment: C2AL_VENV (venv path, default .venv), PYTHON (interpreter, default python3).
set -euo pipefail

variant=cpu
deps_only=0
for arg in "$@"; do
  case "$arg" in
    cpu|cuda) variant="$arg" ;;
    --deps-only) deps_only=1 ;;
    *) echo "install.sh: unknown argument '$arg' (expected cpu, cuda or --deps-only)" >&2; exit 2 ;;
  esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${C2AL_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
case "$variant" in
  cpu)  reqs=("$repo/requirements.txt") ;;
  cuda) reqs=("$repo/requirements-cuda.txt") ;;
esac

stamp="$venv/.c2al-install-stamp"
inputs_hash="$(cat "${reqs[@]}" "$repo/requirements-torchrec.txt" "$0" \
               | sha256sum | cut -d' ' -f1)-$variant"
if [ "$deps_only" = 1 ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r "${reqs[@]}"
  "$venv/bin/python" -m pip install -q --no-deps -r "$repo/requirements-torchrec.txt"
  exit 0
fi
inputs_hash="$inputs_hash-$(sha256sum "$repo/setup.py" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# Some machines list local index directories that do not exist; pip warns once per package.
quiet_pip() { "${pip[@]}" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs_hash" ]; then
  echo "[install] installing the pinned $variant stack into $venv (1-2 minutes on a fresh machine)"
  quiet_pip install -r "${reqs[@]}"
  quiet_pip install --no-deps -r "$repo/requirements-torchrec.txt"
  quiet_pip install --no-deps --no-build-isolation -e "$repo"
  rm -f "$stamp"
else
  echo "[install] $venv is up to date"
fi

# Verify: torchrec must load the fbgemm build this variant expects.
"$venv/bin/python" - "$variant" <<'PY'
import importlib.metadata as md
import sys

variant = sys.argv[1]
installed = {d.metadata["Name"].lower() for d in md.distributions()}
if variant == "cpu" and "fbgemm-gpu" in installed:
    sys.exit(
        "[install] ERROR: the CUDA build 'fbgemm-gpu' is installed beside 'fbgemm-gpu-cpu' and "
        "shadows it (torchrec then fails with 'Could not load this library: fbgemm_gpu_config.so').\n"
        "Fix: .venv/bin/pip uninstall -y fbgemm-gpu && .venv/bin/pip install --force-reinstall "
        "fbgemm-gpu-cpu==1.8.0  (and install torchrec only with --no-deps)."
    )
if variant == "cuda" and "fbgemm-gpu-cpu" in installed:
    sys.exit("[install] ERROR: 'fbgemm-gpu-cpu' is installed in a cuda venv; uninstall it.")
try:
    import torch
    import fbgemm_gpu  # noqa: F401
    import torchrec  # noqa: F401
    import c2al_rec  # noqa: F401
except Exception as e:  # report the real import error with the fix
    sys.exit(f"[install] ERROR: import check failed: {type(e).__name__}: {e}\n"
             "Fix: rm -rf .venv && scripts/install.sh")
if variant == "cuda" and not torch.version.cuda:
    sys.exit(f"[install] ERROR: torch {torch.__version__} is not a CUDA build")
if variant == "cpu" and torch.version.cuda:
    sys.exit(f"[install] ERROR: torch {torch.__version__} is a CUDA build; expected the CPU wheel")
print(f"[install] ok: torch {torch.__version__}, torchrec {md.version('torchrec')}, "
      f"fbgemm {'fbgemm-gpu-cpu' if variant == 'cpu' else 'fbgemm-gpu'}")
PY
echo "$inputs_hash" > "$stamp"
