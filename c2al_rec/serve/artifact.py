"""Load an exported model directory safely: TorchScript + JSON metadata + weights-only tensors.

Nothing is unpickled beyond ``torch.jit.load`` of ``model.pt`` and ``torch.load(weights_only=True)``
of ``sample_input.pt``; the metadata is JSON. Only ``torch`` and ``torchrec`` need to be importable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
import torchrec  # noqa: F401  (registers the torchrec / fbgemm ops the scripted model calls)

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
SAMPLE_FILE = "sample_input.pt"


@dataclass
class ExportedModel:
    """A loaded serving model with its metadata."""

    module: torch.jit.ScriptModule
    metadata: Dict[str, Any]
    path: Path

    @property
    def sparse_features(self) -> list[dict[str, Any]]:
        return self.metadata["sparse"]

    @property
    def dense_features(self) -> list[str]:
        return self.metadata["dense"]

    def predict(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Probabilities [B] from ``{"dense": [B, D], "<f>.values": int64, "<f>.lengths": int64 [B]}``."""
        with torch.no_grad():
            return self.module.predict(inputs)

    def sample_input(self) -> Dict[str, torch.Tensor]:
        return torch.load(self.path / SAMPLE_FILE, weights_only=True)


def load_exported(path: str | Path) -> ExportedModel:
    """Load ``model.pt`` + ``metadata.json`` from an exported directory; errors name the missing file."""
    p = Path(path)
    for name in (MODEL_FILE, METADATA_FILE):
        if not (p / name).is_file():
            raise FileNotFoundError(f"{p} is not an exported model directory: {name} is missing")
    metadata = json.loads((p / METADATA_FILE).read_text())
    module = torch.jit.load(str(p / MODEL_FILE), map_location="cpu")
    module.eval()
    return ExportedModel(module, metadata, p)
