"""The wheel: launch/ configs ship as package data (so `--dataset` works installed), no top-level benchmarks.

Tier 4 (integration): builds the wheel with the venv's setuptools (~10 s), unpacks it and imports
from the unpacked copy in a fresh process outside the checkout.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_launch_configs_and_no_benchmarks(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("c2al_rec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "c2al_rec",
        "c2al_rec_components",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    assert "c2al_rec/launch/configs/demo.toml" in names
    assert "c2al_rec/launch/cohorts/user_value_p5_p95.json" in names
    assert "c2al_rec/serve/serving_ops.json" in names  # serving refuses every model.pt without it

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from c2al_rec.config.bundled import BUNDLED_DATASETS, bundled_config\n"
        "from c2al_rec.config import load_config\n"
        "for name in BUNDLED_DATASETS.values():\n"
        "    path = bundled_config(name); load_config(path); print(path)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(site / "c2al_rec" / "launch" / "configs")) for line in out.stdout.split())
