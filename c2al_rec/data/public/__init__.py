"""Public datasets converted into c2al-rec datasets: one module per dataset, named as the dataset.

Each module registers its converter with ``@register_public_dataset("<name>")``; the names, with the
CLI's help for each, are ``PUBLIC_DATASETS`` in ``c2al_rec.config`` (a test keeps the registry's keys
equal to them). Every module of this package is imported here, so adding a dataset is one module
here plus one entry there. A converter is ``convert(out, source=None[, seed=0]) -> DatasetSchema``
(``seed`` when the entry says the split is seeded) and writes atomically.

Example::

    convert_public("adult", Path("data/adult"), seed=0)
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable, Optional

from c2al_rec.config import PUBLIC_DATASETS

CONVERTERS: dict[str, Callable[..., Any]] = {}
"""Public dataset name (``data.public``, ``c2al-rec data <name>``) -> its converter."""


def register_public_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a converter under ``name`` (an entry of ``PUBLIC_DATASETS``)."""

    def register(convert: Callable[..., Any]) -> Callable[..., Any]:
        if name in CONVERTERS:
            raise ValueError(f"public dataset '{name}' is registered twice")
        CONVERTERS[name] = convert
        return convert

    return register


def write_splits(out: Path, schema: Any, parts: dict[str, Any], row_group_size: int) -> Any:
    """Write each split's table (``parts``: split name -> ``pa.Table``) as ``<out>/<split>/part-00000.parquet``,
    then ``schema.json`` last (a dataset without it is incomplete); returns ``schema``."""
    from ..dataset import write_parquet

    for split, table in parts.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        write_parquet(table, out / split / "part-00000.parquet", row_group_size=row_group_size)
    schema.save(out)
    return schema


def convert_public(name: str, out: Path, source: Optional[Path] = None, seed: int = 0) -> Any:
    """Convert the public dataset ``name`` into ``out``; returns its ``DatasetSchema``.

    Args:
        name: a name of ``PUBLIC_DATASETS``.
        out: the dataset root to create.
        source: the dataset's raw files (None: fetched into the cache).
        seed: seed of the split, for datasets whose split is seeded.
    """
    if name not in CONVERTERS:
        raise ValueError(f"data.public: unknown dataset '{name}' (expected one of {tuple(CONVERTERS)})")
    if PUBLIC_DATASETS[name].seeded:
        return CONVERTERS[name](Path(out), source, seed=seed)
    return CONVERTERS[name](Path(out), source)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
