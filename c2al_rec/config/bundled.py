"""The run configs shipped with c2al-rec (``launch/configs/*.toml``), found in a checkout or an installed wheel.

The wheel carries ``launch/`` as package data of ``c2al_rec.launch``; a source checkout reads the
repository's ``launch/`` directly, so an edit there takes effect without reinstalling.

Example::

    load_config(bundled_config("demo.toml"))
"""

from __future__ import annotations

from pathlib import Path

from .data import PUBLIC_DATASETS

_CHECKOUT_LAUNCH = Path(__file__).resolve().parents[2] / "launch"  # <repo>/launch
_PACKAGE_LAUNCH = Path(__file__).resolve().parents[1] / "launch"  # <site-packages>/c2al_rec/launch


def launch_dir() -> Path:
    """The ``launch/`` directory: the checkout's when running from one, else the installed package data."""
    for candidate in (_CHECKOUT_LAUNCH, _PACKAGE_LAUNCH):
        if (candidate / "configs").is_dir():
            return candidate
    raise FileNotFoundError(
        f"c2al-rec's bundled launch/ configs are missing: neither {_CHECKOUT_LAUNCH} (a checkout) nor "
        f"{_PACKAGE_LAUNCH} (package data) exists; reinstall with scripts/install.sh"
    )


def _ships_config(name: str) -> bool:
    try:
        return (launch_dir() / "configs" / name).is_file()
    except FileNotFoundError:
        return False


# `c2al-rec pipeline --dataset <name>` -> its bundled config: the demo for synthetic data, and
# launch/configs/<name>.toml for each public dataset that ships one
BUNDLED_DATASETS = {
    "synthetic": "demo.toml",
    **{name: f"{name}.toml" for name in PUBLIC_DATASETS if _ships_config(f"{name}.toml")},
}


def bundled_config(name: str) -> Path:
    """Path of ``launch/configs/<name>`` (FileNotFoundError listing the bundled configs)."""
    path = launch_dir() / "configs" / name
    if not path.is_file():
        known = sorted(p.name for p in (launch_dir() / "configs").glob("*.toml"))
        raise FileNotFoundError(f"no bundled config '{name}' (bundled: {known})")
    return path
