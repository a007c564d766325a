#!/usr/bin/env bash
# GPU check of the FM op and the DHEN over-arch step, for a CUDA machine that has only python3,
# torch and triton (no venv, no torchrec): about 5 minutes.
#
#   scripts/gpu_check.sh            # from the repository root
#
# 1. the CUDA tier of tests/test_ops_fm_interaction.py with compiled (not interpreted) Triton
#    kernels: fp32 and bf16 vs float64, attentive and static Y, fixed batch tiles and the
#    autotuner's pick, the autocast / tf32 precision policy (skipped with a warning if pytest is
#    missing: the benchmarks below still check their outputs against float64 / the reference);
# 2. python3 -m benchmarks.fm_kernel: the op alone at B=65536, n=64, d=128, k=32, bf16; merges the
#    gpu_* entries into benchmarks/results/fm_kernel.{json,md} (CPU entries kept);
# 3. python3 -m benchmarks.dhen_step: the over-arch training step at B=16384 under bf16 autocast,
#    four variants; merges the gpu_* entries into benchmarks/results/dhen_step.{json,md}.
# Triton's autotuning results are cached on disk, so steps 2-3 reuse what step 1 tuned.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0
PY=${PYTHON:-python3}

"$PY" - <<'EOF'
import torch, triton
assert torch.cuda.is_available(), "no CUDA GPU visible"
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name(0)}")
EOF

start=$SECONDS
status=0
if "$PY" -c "import pytest" 2>/dev/null; then
    # --noconftest: tests/conftest.py sets TRITON_INTERPRET=1 and imports torchrec helpers
    "$PY" -m pytest -q -ra --noconftest -p no:cacheprovider tests/test_ops_fm_interaction.py || status=$?
else
    echo "WARNING: pytest is not installed here; skipping the CUDA tests (the benchmarks still run)" >&2
    status=2
fi
echo "tests: $((SECONDS - start)) s (status $status)"

# each step runs even if an earlier one failed; the exit status reports the first failure
"$PY" -m benchmarks.fm_kernel --runs 2 --record || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
echo "fm_kernel done at $((SECONDS - start)) s"
"$PY" -m benchmarks.dhen_step --steps 20 --warmup 3 --record || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
echo "dhen_step done at $((SECONDS - start)) s"

echo "results: benchmarks/results/fm_kernel.{json,md}, benchmarks/results/dhen_step.{json,md}"
exit $status
