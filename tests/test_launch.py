"""Tier 4: launching through torchx (installed entry points, builtins kept, two-node shape)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_torchx_builtins_keep_every_builtin_beside_ours() -> None:
    from torchx.specs.finder import ModuleComponentsFinder

    out = subprocess.run([BIN / "torchx", "builtins"], capture_output=True, text=True, env=_env(), check=True).stdout
    # what torchx lists when no package registers components (its own scan of torchx.components)
    builtins = [c.name for c in ModuleComponentsFinder("torchx.components", "").find() if not c.validation_errors]
    assert {"dist.ddp", "metrics.tensorboard", "serve.torchserve"} <= set(builtins)
    listed = {line.split(". ", 1)[1].strip() for line in out.splitlines() if ". " in line}
    assert set(builtins) <= listed, sorted(set(builtins) - listed)
    assert "c2al.dmp_check" in listed and "c2al.train" in listed


def test_torchx_two_node_shape_runs_dmp_check(tmp_path: Path) -> None:
    """-j 2x1: two single-process 'nodes' joined by c10d rendezvous on localhost."""
    proc = subprocess.run(
        [
            BIN / "torchx",
            "run",
            "-s",
            "local_cwd",
            "-cfg",
            f"log_dir={tmp_path}",
            "c2al.dmp_check",
            "-j",
            "2x1",
            "--steps",
            "20",
            "--rdzv_port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCEEDED" in out, out
    assert out.count('"loss_last5"') == 2, out


def _torchx_train(component: str, j: str, out: Path, data: Path, log_dir: Path) -> str:
    proc = subprocess.run(
        [
            BIN / "torchx",
            "run",
            "-s",
            "local_cwd",
            "-cfg",
            f"log_dir={log_dir}",
            component,
            "-j",
            j,
            "--config",
            "launch/configs/smoke.toml",
            "--out",
            str(out),
            "--rdzv_port",
            str(_free_port()),
            "--",
            f"--data.path={data}",
            "--train.max_steps=8",
            "--train.eval_every=0",
            "--checkpoint.every_steps=0",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=600,
    )
    out_text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "SUCCEEDED" in out_text, out_text[-4000:]
    return out_text


def test_torchx_train_from_checkout_1x2_and_installed_name_2x1(tmp_path: Path) -> None:
    """components/c2al.py:train on 1 node x 2 procs, then c2al.train on 2 'nodes' x 1 proc (c10d on localhost)."""
    data = tmp_path / "data"
    _torchx_train("components/c2al.py:train", "1x2", tmp_path / "a", data, tmp_path / "logs")
    _torchx_train("c2al.train", "2x1", tmp_path / "b", data, tmp_path / "logs")
    for run in ("a", "b"):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["steps"] == 8 and metrics["world_size"] == 2 and metrics["c2al"] is True


def _free_port() -> int:
    from c2al_rec.distributed.backend import free_port

    return free_port()
