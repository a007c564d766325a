"""Backend and device choice, in one place: nccl + cuda when GPUs are usable, else gloo + cpu."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process runs within the job."""

    rank: int
    """Global rank."""
    world_size: int
    """Number of processes in the job."""
    local_rank: int
    """Rank within this node (selects the GPU)."""
    local_world_size: int
    """Processes on this node (divides the CPU threads)."""
    backend: str
    """'nccl' or 'gloo'."""
    device: torch.device
    """Device of this rank's dense compute."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_backend() -> tuple[str, torch.device]:
    """Return ``(backend, device_type)``: ("nccl", cuda) when CUDA is usable, else ("gloo", cpu).

    ``C2AL_FORCE_CPU=1`` forces gloo + cpu on a GPU host (tests, debugging).
    """
    if torch.cuda.is_available() and torch.cuda.device_count() > 0 and os.environ.get("C2AL_FORCE_CPU") != "1":
        return "nccl", torch.device("cuda")
    return "gloo", torch.device("cpu")


def init_distributed() -> DistContext:
    """Initialise the default process group from torchrun-style env vars (or a 1-process group).

    Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Without them
    (a plain ``python`` run) it starts a single-process group on an in-memory store, so the same
    DMP code path runs everywhere. Idempotent.
    """
    backend, device_type = choose_backend()
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if not dist.is_initialized():
        if "RANK" not in os.environ and world_size == 1:
            # a plain `python` run: an in-memory store, so there is no port to pick, to pass on to child
            # processes through MASTER_PORT, or to collide on when several such runs start at once
            dist.init_process_group(backend=backend, rank=0, world_size=1, store=dist.HashStore())
        else:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size, store=_elastic_store(world_size))
    if device_type.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistContext(rank, world_size, local_rank, local_world_size, backend, device)


def _elastic_store(world_size: int) -> Optional[dist.Store]:
    """Under torchelastic's shared rendezvous store, a store namespaced by restart attempt.

    torchelastic (torchrun, torchx, elastic_launch) reuses one TCP store across restart rounds,
    so after a restart the new ranks would read the dead attempt's gloo/nccl addresses and fail
    to connect ("connectFullMesh ... Connection refused"). A per-attempt prefix isolates rounds.
    Returns None (the default env:// rendezvous) outside torchelastic.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    client = dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ["MASTER_PORT"]),
        world_size=world_size,
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    return dist.PrefixStore(f"c2al/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", client)


def set_cpu_threads(ctx: DistContext, requested: int = 0) -> int:
    """Give each local process an equal share of the cores (``requested`` > 0 overrides)."""
    n = requested or max(1, (os.cpu_count() or 1) // max(1, ctx.local_world_size))
    torch.set_num_threads(n)
    return n


def free_port() -> int:
    """A TCP port that is free on localhost right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def destroy_distributed() -> None:
    """Tear down the default process group if one is up."""
    if dist.is_initialized():
        dist.destroy_process_group()
