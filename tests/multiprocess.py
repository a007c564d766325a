"""Spawn harness: run a function on N gloo ranks on CPU and collect each rank's return value.

Example::

    results = run_multiprocess(my_module.train_fn, world_size=2, steps=10)
    assert results[0]["loss"] < ...

``fn`` must be importable by name (a module-level function), and its return value picklable.
Each rank gets torchrun-style env vars (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) so code under test calls ``init_distributed()`` exactly as in a real job.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import traceback
from typing import Any, Callable

from c2al_rec.distributed.backend import free_port


def _worker(fn: Callable[..., Any], rank: int, world_size: int, port: int, env: dict, q: Any, kwargs: dict) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "C2AL_FORCE_CPU": "1",
            **env,
        }
    )
    try:
        q.put((rank, True, fn(**kwargs)))
    except BaseException:  # report any failure with its traceback to the parent
        q.put((rank, False, traceback.format_exc()))


def run_multiprocess(
    fn: Callable[..., Any], world_size: int = 2, timeout_s: float = 600, env: dict | None = None, **kwargs: Any
) -> list[Any]:
    """Run ``fn(**kwargs)`` on ``world_size`` spawned ranks; return results ordered by rank.

    Raises:
        RuntimeError: a rank raised (its traceback is in the message), died, or timed out.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(fn, rank, world_size, port, env or {}, q, kwargs), daemon=False)
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    try:
        while len(results) < world_size:
            try:
                rank, ok, value = q.get(timeout=timeout_s)
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if not p.is_alive() and i not in results]
                raise RuntimeError(f"ranks timed out after {timeout_s}s (dead without result: {dead})") from None
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world_size)]
