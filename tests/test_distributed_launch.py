"""c2al_rec.distributed.launch: the one local elastic launch (trainer and benchmarks) keeps its settings."""

from __future__ import annotations

from typing import Any

import torch.distributed.launcher.api as launcher_api

from c2al_rec.distributed.launch import launch_local


def test_launch_local_passes_the_settings_every_launch_needs(monkeypatch) -> None:
    seen: dict[str, Any] = {}

    def fake_elastic_launch(config, fn):
        seen.update(config=config, fn=fn)
        return lambda *args: {0: args}

    monkeypatch.setattr(launcher_api, "elastic_launch", fake_elastic_launch)
    out = launch_local(print, ("a", 1), nproc=2, run_id="job-7", max_restarts=3)
    c = seen["config"]
    assert out == {0: ("a", 1)} and seen["fn"] is print
    assert (c.min_nodes, c.max_nodes, c.nproc_per_node, c.run_id, c.max_restarts) == (1, 1, 2, "job-7", 3)
    assert c.rdzv_backend == "c10d" and c.rdzv_endpoint.startswith("127.0.0.1:")
    assert c.monitor_interval == 1 and c.start_method == "spawn"
