"""The image definition (tier 1, static: no Docker engine runs here): what torchx's container
schedulers need of it, and a build context without venvs, runs or caches."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _instructions() -> list[str]:
    lines = (REPO / "docker" / "Dockerfile").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_no_entrypoint_one_base_non_root_same_installer() -> None:
    ins = _instructions()
    # torchx local_docker / kubernetes pass `bash -c "torchrun ..."` as the container command
    assert not any(i.upper().startswith("ENTRYPOINT") for i in ins)
    assert [i for i in ins if i.upper().startswith("FROM")] == ["FROM python:3.11-slim"]
    users = [i.split()[1] for i in ins if i.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert sum("scripts/install.sh ${VARIANT}" in i for i in ins) == 2  # deps layer, then the project


def test_build_context_excludes_local_state() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", "runs", ".cache", ".pytest_cache"} <= ignored


def test_torchxconfig_gives_the_components_an_image() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".torchxconfig")
    assert cfg["cli:run"]["scheduler"] == "local_cwd"
    for comp in ("c2al.train", "c2al.train_smoke", "c2al.dmp_check"):
        assert cfg[f"component:{comp}"]["image"] == "c2al-rec:latest"
