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


def _env(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """``env`` with OMP_NUM_THREADS=1 unless it sets one: torchrun's own default, set explicitly so
    that torchrun does not print its banner about it (the trainer sets torch's threads per rank)."""
    return {"OMP_NUM_THREADS": "1", **(env or {})}


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
        env: extra environment variables, e.g. NCCL_DEBUG=INFO (OMP_NUM_THREADS defaults to 1)
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
        env=_env(env),
        rdzv_port=rdzv_port,
    )


def train(
    *overrides: str,
    config: str = "launch/configs/synthetic.toml",
    out: str = "runs/train",
    resume: str = "auto",
    image: str = DEFAULT_IMAGE,
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    max_retries: int = 0,
    env: Optional[Dict[str, str]] = None,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Train c2al-rec (baseline or C2AL, as the config says) with DMP on j = nodes x procs.

    Args:
        overrides: config overrides, e.g. --train.max_steps=1000 --cohorts.enabled=false; --overwrite
            clears an out that holds another run (otherwise only resume=auto continues one)
        config: TOML run config (path inside the image / working directory)
        out: run directory (shared storage on a cluster)
        resume: 'auto' continues from the newest complete checkpoint (restarts resume too)
        image: container image (local_cwd ignores it and runs from the current directory)
        j: nodes x processes per node, e.g. 1x2, 2x1, 8x8
        cpu: CPUs per replica
        gpu: GPUs per replica (0: gloo on CPU)
        memMB: memory per replica in MB
        max_retries: job-level retries after a failure (training resumes from checkpoints)
        env: extra environment variables (OMP_NUM_THREADS defaults to 1)
        rdzv_port: c10d rendezvous port on the first node
    """
    return dist.ddp(
        "--config",
        config,
        "--out",
        out,
        f"--checkpoint.resume={resume}",
        *overrides,
        m="c2al_rec.train",
        image=image,
        name="c2al-train",
        j=j,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        max_retries=max_retries,
        env=_env(env),
        rdzv_port=rdzv_port,
    )


def train_smoke(
    out: str = "runs/smoke",
    image: str = DEFAULT_IMAGE,
    j: str = "1x2",
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Smoke-train C2AL on a small generated dataset in seconds (launch/configs/smoke.toml); replaces out.

    Args:
        out: run directory
        image: container image (local_cwd ignores it)
        j: nodes x processes per node
        rdzv_port: c10d rendezvous port on the first node
    """
    return train(
        "--overwrite",  # a smoke check starts from scratch every time
        config="launch/configs/smoke.toml",
        out=out,
        resume="never",
        image=image,
        j=j,
        cpu=1,
        memMB=4096,
        rdzv_port=rdzv_port,
    )
