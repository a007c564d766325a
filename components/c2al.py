"""torchx components for c2al-rec. Each is a typed function returning an ``AppDef`` built on
``torchx.components.dist.ddp``; its docstring is its ``torchx run`` help.

From a checkout:   torchx run -s local_cwd components/c2al.py:dmp_check -j 1x2
Installed:         torchx run -s local_cwd c2al.dmp_check -j 1x2
Defaults (scheduler, image) live in .torchxconfig.
"""

# No `from __future__ import annotations`: torchx decodes CLI args from real annotation types.

from typing import Dict, Optional

import torchx.specs as specs
from torchx.components import dist

DEFAULT_IMAGE = "c2al-rec:latest"


def dmp_check(
    steps: int = 30,
    batch_size: int = 64,
    image: str = DEFAULT_IMAGE,
    j: str = "1x2",
    cpu: int = 1,
    memMB: int = 4096,
    env: Optional[Dict[str, str]] = None,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Check that sharded TorchRec training works on this cluster: a tiny DMP job whose loss must fall.

    Args:
        steps: training steps
        batch_size: rows per rank per step
        image: container image (local_cwd ignores it and runs from the current directory)
        j: nodes x processes per node, e.g. 1x2 or 2x1
        cpu: CPUs per replica
        memMB: memory per replica in MB
        env: extra environment variables, e.g. NCCL_DEBUG=INFO
        rdzv_port: c10d rendezvous port on the first node
    """
    return dist.ddp(
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        m="c2al_rec.distributed.dmp_check",
        image=image,
        name="c2al-dmp-check",
        j=j,
        cpu=cpu,
        memMB=memMB,
        env=env,
        rdzv_port=rdzv_port,
    )
