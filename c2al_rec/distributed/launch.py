"""The local elastic launch every multi-process path shares: ``nproc`` ranks on this host, as torchrun starts them."""

from __future__ import annotations

from typing import Any, Callable

from .backend import free_port


def launch_local(fn: Callable[..., Any], args: tuple, nproc: int, run_id: str, max_restarts: int = 0) -> dict[int, Any]:
    """Run ``fn(*args)`` on ``nproc`` local ranks under torchelastic; returns ``{rank: fn's result}``.

    Args:
        fn: the rank's entry point (picklable: the ranks are spawned).
        args: its arguments (picklable).
        nproc: local ranks.
        run_id: the rendezvous's id (unique per launch: the pid and what is launched).
        max_restarts: restarts of all ranks after one fails.

    The settings each launch needs: a c10d rendezvous on a free local port (no etcd, no fixed port to
    collide on); ``spawn`` (a forked rank would inherit the parent's threads and torch state); the agent
    polls its ranks every second (the default 5 s adds seconds to every launch and failure). torchelastic
    keeps one store across restarts: the ranks' ``init_distributed`` namespaces it by
    ``TORCHELASTIC_RESTART_COUNT``, so a restarted rank never reads the dead attempt's addresses.
    Raises torchelastic's ``ChildFailedError`` when a rank fails (after the restarts).
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=max_restarts,
        monitor_interval=1,
        start_method="spawn",
    )
    return elastic_launch(config, fn)(*args)
