"""Test tiers (see README "Tests"):

1. config / single process: plain pytest functions.
2. multi-process: 2 gloo ranks on CPU through ``tests.multiprocess.run_multiprocess``; each launch
   costs seconds of imports, so one launch checks several things.
3. CUDA numerics: skipped with a reason when no GPU is present.
4. integration: the real CLI / torchrun / torchx paths end to end.
"""

import os

# Triton's CPU interpreter must be chosen before triton is first imported in this process.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Keep BLAS from oversubscribing the 2 cores when several ranks run at once.
os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402

from tests.trained_runs import TrainedRuns, train_smoke_pair  # noqa: E402


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainedRuns:
    """A baseline and a C2AL run on the smoke data, trained once per session (1 rank, in-process)."""
    return train_smoke_pair(tmp_path_factory.mktemp("smoke_runs"))
