"""Unsharded model modules (sparse/dense arch, DHEN interactions, heads); buildable on meta.

The over-arch (``dhen``, ``interactions``, ``mlp``) imports without torchrec, so it runs where only
torch and triton are installed; ``C2ALModel``, ``build_run_model`` and ``tables_from_features`` (``model``,
which needs torchrec) are imported on first access.
"""

from typing import Any

__all__ = ["C2ALModel", "build_run_model", "tables_from_features"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for c2al_rec.modules.dhen) must not import torchrec.
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
