"""c2al-rec: Cohort-Contrastive Auxiliary Learning on a TorchRec stack.

Install with ``scripts/install.sh`` (it pins the stack and installs torchrec with --no-deps);
a plain ``pip install .`` would pull the CUDA fbgemm-gpu through torchrec's metadata.
"""
from setuptools import find_packages, setup

setup(
    name="c2al-rec",
    version="0.1.0",
    description="C2AL (Cohort-Contrastive Auxiliary Learning) on TorchRec: DMP training, DHEN, export",
    python_requires=">=3.11",
    # benchmarks/ is run from a checkout (python -m benchmarks.<name>) and is not installed.
    # launch/ (run configs, cohort specs, scheduler docs) ships as package data of c2al_rec.launch
    # so that `c2al-rec pipeline --dataset ...` works from a wheel too.
    packages=find_packages(include=["c2al_rec", "c2al_rec.*"]) + ["c2al_rec_components", "c2al_rec.launch"],
    package_dir={"c2al_rec_components": "components", "c2al_rec.launch": "launch"},
    package_data={"c2al_rec.launch": ["configs/*.toml", "configs/*.json", "cohorts/*.json", "*.md"]},
    # Versions are pinned in requirements.txt and installed by scripts/install.sh; torchrec is
    # installed there with --no-deps, so it is deliberately not listed here.
    install_requires=[],
    # Optional: `pip install '.[mlflow]'` for `c2al-rec train --track mlflow`. mlflow-skinny is the
    # tracking client alone (no server, no ML framework plug-ins); it is not in requirements.txt.
    extras_require={"mlflow": ["mlflow-skinny>=2.10"]},
    entry_points={
        "console_scripts": ["c2al-rec = c2al_rec.cli.main:main"],
        # Registering any torchx.components entry point makes torchx stop loading its builtins,
        # so every builtin module is re-registered beside ours (dist.ddp, utils.*, serve.torchserve,
        # metrics.tensorboard, interpret.*: `torchx builtins` lists the same as without this package).
        "torchx.components": [
            "c2al = c2al_rec_components.c2al",
            "dist = torchx.components.dist",
            "utils = torchx.components.utils",
            "serve = torchx.components.serve",
            "metrics = torchx.components.metrics",
            "interpret = torchx.components.interpret",
            "train = torchx.components.train",
        ],
    },
)
