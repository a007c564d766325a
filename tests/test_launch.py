"""Tier 4: launching through torchx (installed entry points, builtins kept, two-node shape)."""

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


def test_torchx_builtins_keep_dist_ddp_beside_ours() -> None:
    out = subprocess.run([BIN / "torchx", "builtins"], capture_output=True, text=True, env=_env(), check=True).stdout
    assert "dist.ddp" in out, out
    assert "c2al.dmp_check" in out, out


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


def _free_port() -> int:
    from c2al_rec.distributed.backend import free_port

    return free_port()
