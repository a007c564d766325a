"""Train entry points: preflight checks (before any process group), the per-rank worker, launch.

``c2al-rec train`` and ``python -m c2al_rec.train`` (under torchrun) both end up in ``run_rank``.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from c2al_rec.cohorts.spec_file import load_cohort_spec
from c2al_rec.config import Config, config_to_dict, load_config_dict
from c2al_rec.data.schema import load_schema
from c2al_rec.data.sources import ensure_dataset


def preflight_config_only(cfg: Config) -> Config:
    """Make the config's paths absolute (data.path, cohorts.spec, checkpoint.init_from); checks nothing else."""
    if not cfg.data.path:
        raise ValueError("data.path is empty: set it in the config's [data] section or with --data.path=DIR")
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else p  # noqa: E731
    return replace(
        cfg,
        data=replace(cfg.data, path=absolute(cfg.data.path)),
        cohorts=replace(cfg.cohorts, spec=absolute(cfg.cohorts.spec)),
        checkpoint=replace(cfg.checkpoint, init_from=absolute(cfg.checkpoint.init_from)),
    )


def preflight(cfg: Config, generate: bool = True) -> Config:
    """Validate what can be validated before processes start; generate synthetic data if configured.

    Returns the config with ``data.path`` made absolute. Raises ValueError / FileNotFoundError
    naming the flag, file or column at fault.
    """
    cfg = preflight_config_only(cfg)
    data = cfg.data
    if generate:
        ensure_dataset(data)
    elif not Path(data.path).is_dir():
        raise FileNotFoundError(f"data.path {data.path} does not exist")
    schema = load_schema(data.path)
    for split in (data.train_split, data.valid_split):
        if not schema.split_dir(split).is_dir():
            raise FileNotFoundError(
                f"data.path {data.path}: split '{split}' ({schema.split_dir(split)}) does not exist"
            )
    if cfg.cohorts.spec:
        spec = load_cohort_spec(cfg.cohorts.spec)
        axes = [a.name for a in schema.axes]
        if spec.axis not in axes:
            raise ValueError(
                f"cohort spec {cfg.cohorts.spec}: axis '{spec.axis}' is not an axis of {data.path} (axes: {axes})"
            )
    for name in ("init_from",):
        value = getattr(cfg.checkpoint, name)
        if value and not Path(value).exists():
            raise FileNotFoundError(f"checkpoint.{name} {value} does not exist")
    return replace(cfg, data=data)


def run_rank(cfg_dict: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Train on this rank (env: torchrun-style RANK/WORLD_SIZE...); returns the final metrics."""
    from c2al_rec.distributed.backend import destroy_distributed, init_distributed

    from .trainer import Trainer

    cfg = load_config_dict(cfg_dict)
    ctx = init_distributed()
    trainer = Trainer(cfg, Path(run_dir), ctx)
    try:
        trainer.build()
        metrics = trainer.train()
        trainer.close(metrics)
    finally:
        destroy_distributed()
    return metrics


def wait_for_dataset(cfg: Config, timeout_s: float = 3600) -> None:
    """Non-zero ranks wait for rank 0 to finish generating the dataset (no process group yet)."""
    schema_file = Path(cfg.data.path).expanduser() / "schema.json"
    deadline = time.monotonic() + timeout_s
    while not schema_file.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {os.environ.get('RANK')}: {schema_file} did not appear in {timeout_s}s")
        time.sleep(0.5)


def launch(cfg: Config, run_dir: Path, nproc_per_node: int = 1, max_restarts: int = 0) -> Optional[dict[str, Any]]:
    """Run training in this process (1 rank) or on ``nproc_per_node`` local ranks (elastic launch)."""
    cfg = preflight(cfg)
    cfg_dict = config_to_dict(cfg)
    if nproc_per_node <= 1 and "RANK" not in os.environ:
        return run_rank(cfg_dict, str(run_dir))
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from c2al_rec.distributed.backend import free_port

    launch_cfg = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc_per_node,
        run_id=f"c2al-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=max_restarts,
        monitor_interval=1,
        start_method="spawn",
    )
    results = elastic_launch(launch_cfg, run_rank)(cfg_dict, str(run_dir))
    return results[0]
