"""Where a configured dataset comes from: an existing root, a public set converted on first use, or
the synthetic generator (written atomically: a temporary sibling directory renamed into place).

Example::

    ensure_dataset(cfg.data)     # returns cfg.data.path, creating it first when it is missing
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from c2al_rec.config import DataConfig

from .schema import SCHEMA_FILE, load_schema
from .synthetic import check_generation_memory, generate_synthetic


def ensure_dataset(cfg: DataConfig) -> Path:
    """Return ``cfg.path``, generating the synthetic dataset there first when it is missing and
    ``cfg.synthetic.rows > 0`` (atomically: a temporary sibling directory renamed into place).

    Raises:
        FileNotFoundError: the dataset is missing and no synthetic rows are configured.
    """
    if not cfg.path:
        raise ValueError("data.path is empty: set it to a dataset root (holding schema.json)")
    path = Path(cfg.path)
    if (path / SCHEMA_FILE).is_file():
        load_schema(path)
        return path
    if cfg.public:
        from .public import convert_public  # the converters write atomically

        convert_public(cfg.public, path)
        return path
    if cfg.synthetic.rows <= 0:
        raise FileNotFoundError(
            f"{path / SCHEMA_FILE} does not exist and data.synthetic.rows = 0 (nothing to generate)"
        )
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"{path} exists and is not empty but holds no {SCHEMA_FILE}")
    check_generation_memory(cfg.synthetic)  # before creating anything
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        generate_synthetic(tmp, cfg.synthetic)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except OSError:
        if not (path / SCHEMA_FILE).is_file():
            raise
        # another process won the race; its dataset is complete (the rename is atomic)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
