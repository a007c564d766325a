"""Load an exported model directory safely: TorchScript + JSON metadata + weights-only tensors.

Nothing is unpickled beyond ``torch.jit.load`` of ``model.pt`` and ``torch.load(weights_only=True)``
of ``sample_input.pt``; the metadata is JSON. Only ``torch`` and ``torchrec`` need to be importable.
Before ``torch.jit.load`` runs anything, ``model.pt`` must match the size and sha256 that
``metadata.json`` lists under ``artifacts`` (``verify_artifact``), and its serialized code and pickles
must refer to nothing outside the ops an export emits (``archive_scan.check_archive``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import torch
import torchrec  # noqa: F401  (registers the torchrec / fbgemm ops the scripted model calls)

from c2al_rec.io.digest import file_sha256

from .archive_scan import check_archive

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
SAMPLE_FILE = "sample_input.pt"
PREDICTIONS_MODEL_ID_KEY = b"model_id"  # key of the model id in a predictions file's Parquet metadata


def compute_model_id(export_dir: str | Path, model_file: str | Path) -> str:
    """``<export directory name>-<first 12 hex of sha256(model.pt)>``: the exporter records it as
    ``metadata["model_id"]``; a directory exported before it did gets the same id computed."""
    return f"{Path(export_dir).resolve().name}-{file_sha256(model_file)[:12]}"


ARTIFACTS_KEY = "artifacts"  # metadata.json: {"<file>": {"bytes": N, "sha256": "<hex>"}}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactMismatch(ValueError):
    """An artifact of an exported directory is not the file ``metadata.json`` lists (swapped or damaged)."""


def verify_artifact(export_dir: str | Path, name: str, metadata: Dict[str, Any]) -> Dict[str, Any]:
    """Check ``export_dir/name`` against ``metadata["artifacts"][name]`` (size, then sha256) before it is read.

    Args:
        export_dir: the exported directory.
        name: the artifact's file name (``model.pt``, ``model.pt2``, ...).
        metadata: the directory's parsed ``metadata.json``.

    Returns:
        The artifact's entry ``{"bytes": N, "sha256": hex}``.

    Raises:
        ArtifactMismatch: no entry for ``name`` (an export from before artifact hashes), a malformed
            entry, or a file whose size or sha256 differs; one line naming the file.
    """
    path = Path(export_dir) / name
    where = Path(export_dir) / METADATA_FILE
    artifacts = metadata.get(ARTIFACTS_KEY)
    entry = artifacts.get(name) if isinstance(artifacts, dict) else None
    if entry is None:
        raise ArtifactMismatch(
            f"{where}: no '{ARTIFACTS_KEY}' entry for {name} (its bytes and sha256); an export from before "
            f"artifact hashes cannot be checked: export it again"
        )
    if not (
        isinstance(entry, dict)
        and type(entry.get("bytes")) is int
        and isinstance(entry.get("sha256"), str)
        and _SHA256.fullmatch(entry["sha256"])
    ):
        raise ArtifactMismatch(f"{where}: '{ARTIFACTS_KEY}.{name}' must be {{\"bytes\": int, \"sha256\": 64 hex}}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ArtifactMismatch(
            f"{path}: {size} bytes, but {where.name} lists {entry['bytes']}: the file was replaced or damaged "
            f"after export; refusing to load it"
        )
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise ArtifactMismatch(
            f"{path}: sha256 {digest[:12]}..., but {where.name} lists {entry['sha256'][:12]}...: the file was "
            f"replaced after export; refusing to load it"
        )
    return entry


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

    @property
    def model_id(self) -> str:
        """``metadata["model_id"]`` (written by the exporter), else the same id computed (``compute_model_id``)."""
        recorded = self.metadata.get("model_id")
        if isinstance(recorded, str) and recorded:
            return recorded
        return compute_model_id(self.path, self.path / MODEL_FILE)

    def predict(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Probabilities [B] from ``{"dense": [B, D], "<f>.values": int64, "<f>.lengths": int64 [B]}``.

        Scored under ``torch.inference_mode()``: the result carries no autograd history.
        """
        with torch.inference_mode():
            return self.module.predict(inputs)

    def sample_input(self) -> Dict[str, torch.Tensor]:
        """The export's ``sample_input.pt``: a ``Dict[str, Tensor]`` read with ``weights_only=True``.

        Raises:
            ValueError: the file is not one (a pickle with code in it, another object, damaged); one line.
        """
        return read_sample_input(self.path / SAMPLE_FILE)

    def probe_input(self) -> Dict[str, torch.Tensor]:
        """The export's sample input, or for an export without one a single all-zero row (dense 0.0,
        every sparse feature one id 0): what to warm up or check a loaded graph with."""
        if (self.path / SAMPLE_FILE).is_file():
            return self.sample_input()
        inputs = {"dense": torch.zeros(1, len(self.dense_features))}
        for f in self.sparse_features:
            inputs[f"{f['name']}.values"] = torch.zeros(1, dtype=torch.int64)
            inputs[f"{f['name']}.lengths"] = torch.ones(1, dtype=torch.int64)
        return inputs


# served probabilities of the optimised module may differ from the exported module's by float rounding only
SERVING_PARITY_ATOL = 1e-5


def optimize_for_serving(model: ExportedModel) -> tuple[ExportedModel, str]:
    """The model with its TorchScript graph frozen and optimised for inference, if that keeps its answers.

    ``torch.jit.freeze`` turns the weights into constants and folds what they determine;
    ``torch.jit.optimize_for_inference`` then fuses and pre-packs the dense layers. On the benchmark
    model this made a one-row ``predict`` ~20% and a 16-row one ~25% faster. The optimised ``predict``
    must match the exported one on the export's sample input (or one all-zero row) within
    ``SERVING_PARITY_ATOL``; otherwise, or when freezing fails, the exported module is kept.

    Returns:
        (model, what happened: one line for the log).
    """
    sample = model.probe_input()
    try:
        frozen = torch.jit.freeze(model.module, preserved_attrs=["predict"])
        optimized = torch.jit.optimize_for_inference(frozen, other_methods=["predict"])
        with torch.inference_mode():
            want, got = model.module.predict(sample), optimized.predict(sample)
    except Exception as e:  # an op the freezer does not handle: serve the exported graph as it is
        return model, f"serving the exported graph (freezing failed: {_first_line(e)})"
    diff = float((want - got).abs().max()) if want.numel() else 0.0
    if got.shape != want.shape or not diff <= SERVING_PARITY_ATOL:
        return model, f"serving the exported graph (the optimised one differed by {diff:.2e})"
    what = f"serving the frozen, optimised graph (max diff {diff:.1e} from the exported one)"
    return ExportedModel(optimized, model.metadata, model.path), what


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's loader adds paragraphs of advice)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(e).__name__


def read_metadata(export_dir: Path) -> Dict[str, Any]:
    """``metadata.json`` of an exported directory, checked for the fields the predictor needs (one line
    naming the file otherwise)."""
    try:
        metadata = json.loads((export_dir / METADATA_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{export_dir / METADATA_FILE}: not valid JSON: {e}") from None
    _check_metadata(metadata, export_dir / METADATA_FILE)
    return metadata


def load_exported(path: str | Path) -> ExportedModel:
    """Load ``model.pt`` + ``metadata.json`` from an exported directory.

    Checks, in order and before anything is unpickled: ``metadata.json`` (JSON, the fields the
    predictor needs), ``model.pt`` against its ``artifacts`` entry (size, sha256, and the ``model_id``
    derived from it), the archive's code and pickles against the serving allow-list, and
    ``sample_input.pt`` (weights only). Then ``torch.jit.load``.

    Raises:
        FileNotFoundError: ``path`` is not an exported directory (the message names the missing file).
        ValueError: ``metadata.json`` is not the exporter's JSON; ``model.pt`` is not the file it lists
            (``ArtifactMismatch``), refers to an op no export emits (``ArchiveRefused``) or is not a
            loadable TorchScript file (empty, truncated, corrupt); ``sample_input.pt`` is not a
            weights-only tensor dict. One line naming the file.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"--model {p} is not an exported model directory (from `c2al-rec export`)")
    for name in (MODEL_FILE, METADATA_FILE):
        if not (p / name).is_file():
            raise FileNotFoundError(f"{p} is not an exported model directory: {name} is missing")
    metadata = read_metadata(p)
    entry = verify_artifact(p, MODEL_FILE, metadata)
    _check_model_id(metadata, entry["sha256"], p / METADATA_FILE)
    check_archive(p / MODEL_FILE)  # before torch.jit.load: its unpickling runs the archive's __setstate__
    if (p / SAMPLE_FILE).is_file():
        read_sample_input(p / SAMPLE_FILE)  # a bad one stops here, in one line, not in serve's warm-up
    try:
        module = torch.jit.load(str(p / MODEL_FILE), map_location="cpu")
    except Exception as e:  # TorchScript's loader raises RuntimeError and others for a damaged file
        raise ValueError(
            f"{p / MODEL_FILE}: not a loadable TorchScript model (empty, truncated or corrupt?): {_first_line(e)}"
        ) from None
    if not hasattr(module, "predict"):
        raise ValueError(f"{p / MODEL_FILE}: a TorchScript module without a predict method (not from export)")
    module.eval()
    return ExportedModel(module, metadata, p)


def read_sample_input(path: Path) -> Dict[str, torch.Tensor]:
    """``sample_input.pt`` as a ``Dict[str, Tensor]`` with a ``dense`` entry (ValueError naming the file otherwise)."""
    try:
        sample = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # the weights-only unpickler's refusal is pickle.UnpicklingError with paragraphs
        raise ValueError(
            f"{path}: not a tensor file that loads with torch.load(weights_only=True) (a pickle with code in it, "
            f"or damaged?): {_first_line(e)}"
        ) from None
    ok = isinstance(sample, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sample.items())
    if not ok or "dense" not in sample:
        raise ValueError(f"{path}: expected a Dict[str, Tensor] with a 'dense' entry (export's sample input)")
    return sample


def _check_model_id(metadata: Dict[str, Any], sha256: str, where: Path) -> None:
    """``model_id`` ends with the first 12 hex of model.pt's sha256 (what the exporter writes)."""
    model_id = metadata.get("model_id")
    if isinstance(model_id, str) and model_id and not model_id.endswith(f"-{sha256[:12]}"):
        raise ArtifactMismatch(
            f"{where}: model_id '{model_id}' does not end with the sha256 of {MODEL_FILE} ({sha256[:12]}): "
            f"the metadata belongs to another model"
        )


def _check_metadata(metadata: Any, where: Path) -> None:
    """The fields the predictor relies on, with their types (ValueError naming the field)."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: expected a JSON object")
    dense, sparse = metadata.get("dense"), metadata.get("sparse")
    if not isinstance(dense, list) or not all(isinstance(c, str) for c in dense):
        raise ValueError(f"{where}: 'dense' must be a list of column names")
    if not isinstance(sparse, list):
        raise ValueError(f"{where}: 'sparse' must be a list of sparse features")
    for i, f in enumerate(sparse):
        ok = (
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and type(f.get("num_embeddings")) is int
            and f["num_embeddings"] > 0
            and isinstance(f.get("multi_hot"), bool)
            and f.get("out_of_range") in ("error", "hash")
        )
        if not ok:
            raise ValueError(
                f"{where}: sparse[{i}] must hold name, num_embeddings > 0, multi_hot and out_of_range (error|hash)"
            )
