"""Load and call ``model.pt2`` (AOTInductor package) behind the checks the compiled program cannot make.

A ``.pt2`` holds a compiled shared library: loading it runs native code. It is loaded only when asked
(``--format pt2``), and only after its sha256 matches ``metadata.json``'s ``artifacts``. The compiled
graph takes ``(dense [B, D], values: List[int64 [N_f]], lengths: List[int64 [B]])`` and trusts its
ids, so ``Pt2Program.predict`` checks on the host, before the call, what ``SparseIdTransform``
checks inside the TorchScript model (same errors), plus the shapes: every id inside its table
(or hashed), lengths >= 0 summing to each feature's id count, one id per row for a single-hot
feature. The compiled program never sees an index outside its table.

Example::

    model = load_pt2("runs/export")            # ExportedModel; model.module is a Pt2Program
    probs = model.predict(inputs)               # the predict(Dict[str, Tensor]) of model.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor

from c2al_rec.data.schema import SparseFeature
from c2al_rec.data.transforms import SparseIdTransform

from .artifact import METADATA_FILE, ExportedModel, _first_line, read_metadata, verify_artifact

PT2_FILE = "model.pt2"


class Pt2Program:
    """``predict(Dict[str, Tensor])`` of a loaded AOTInductor package, its inputs checked first.

    Args:
        compiled: the callable of ``torch._inductor.aoti_load_package`` (``FlatServing``'s signature).
        features: the sparse features, in the compiled signature's order.
        dense_dim: D of ``dense`` [B, D].
    """

    def __init__(self, compiled: Any, features: Sequence[SparseFeature], dense_dim: int) -> None:
        self.compiled = compiled
        # the package's loader itself, inputs flattened as in C++ (dense, every values, every lengths):
        # the Python wrapper's __call__ re-parses the call spec on every call (~70 us of ~0.5 ms at batch 1)
        self._run = compiled.loader.run
        self.names = [f.name for f in features]
        self.dense_dim = dense_dim
        self._keys = [(f"{n}.values", f"{n}.lengths") for n in self.names]
        # per feature, the first id that is out of range (hash: none); negative ids are checked apart
        self._limits = torch.tensor(
            [float("inf") if f.out_of_range == "hash" else float(f.num_embeddings) for f in features],
            dtype=torch.float64,
        )
        self._multi_hot = [f.multi_hot for f in features]
        self._single = torch.tensor([i for i, f in enumerate(features) if not f.multi_hot], dtype=torch.int64)
        self._id_rules = SparseIdTransform(features)  # raises the TorchScript model's own messages

    def __call__(self, inputs: Dict[str, Tensor]) -> Tensor:
        return self.predict(inputs)

    def predict(self, inputs: Dict[str, Tensor]) -> Tensor:
        """``{"dense": [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}`` -> probabilities [B].

        Raises:
            ValueError: a missing input, a shape that does not fit, a negative length, lengths that do
                not sum to the id count, or an id the schema rejects (``SparseIdTransform``'s message).
        """
        dense, values, lengths = self.check(inputs)
        if dense.shape[0] == 0:
            return torch.empty(0)
        return self._run([dense, *values, *lengths])[0]

    def check(self, inputs: Dict[str, Tensor]) -> tuple[Tensor, List[Tensor], List[Tensor]]:
        """The compiled call's arguments, after every check the compiled program relies on."""
        values: List[Tensor] = []
        lengths: List[Tensor] = []
        for v_key, l_key in self._keys:
            if v_key not in inputs or l_key not in inputs:
                raise ValueError(f"predict: missing input '{v_key}' / '{l_key}'")
            v, n = inputs[v_key], inputs[l_key]
            values.append(v if v.dtype == torch.int64 else v.to(torch.int64))
            lengths.append(n if n.dtype == torch.int64 else n.to(torch.int64))
        if "dense" not in inputs:
            raise ValueError("predict: missing input 'dense'")
        dense = inputs["dense"]
        dense = dense if dense.dtype == torch.float32 else dense.to(torch.float32)
        if dense.dim() != 2 or dense.shape[1] != self.dense_dim:
            raise ValueError(f"predict: 'dense' has shape {list(dense.shape)}, expected [B, {self.dense_dim}]")
        batch = dense.shape[0]
        for (v_key, l_key), v, n in zip(self._keys, values, lengths):
            if v.dim() != 1 or n.shape != (batch,):
                raise ValueError(
                    f"predict: '{v_key}' must be 1-D and '{l_key}' of shape [{batch}] (dense has {batch} rows), "
                    f"got {list(v.shape)} and {list(n.shape)}"
                )
        if batch == 0 or not self.names:
            return dense, values, lengths
        # a few vectorised ops over all features at once: at batch 1 a per-feature loop costs more than the model
        counts = [v.shape[0] for v in values]
        all_lengths = torch.cat(lengths).view(len(self.names), batch)
        per_feature = all_lengths.sum(1).tolist()
        bad_lengths = per_feature != counts or bool(all_lengths.min() < 0)
        if not bad_lengths and self._single.numel():  # single-hot: one id per row, as its schema says
            bad_lengths = bool((all_lengths.index_select(0, self._single) != 1).any())
        if bad_lengths:
            self._raise_bad_lengths(counts, lengths, batch)
        ids = torch.cat(values)
        if ids.numel():
            # per-feature max in one op (float64: exact below 2**53, and larger ids still compare >= any table)
            highs = torch.segment_reduce(ids.to(torch.float64), "max", lengths=torch.tensor(counts), unsafe=True)
            if bool(ids.min() < 0) or bool((highs >= self._limits).any()):
                i = next(
                    i for i, v in enumerate(values) if v.numel() and bool((v < 0).any() | (v >= self._limits[i]).any())
                )
                self._id_rules.transform_values(i, values[i])  # raises, naming the feature and the id
                raise AssertionError("Pt2Program: the id check disagrees with SparseIdTransform")
        return dense, values, lengths

    def _raise_bad_lengths(self, counts: List[int], lengths: List[Tensor], batch: int) -> None:
        for i, (n, name) in enumerate(zip(counts, self.names)):
            v_key, l_key = self._keys[i]
            lens = lengths[i]
            if self._multi_hot[i] and (int(lens.sum()) != n or bool((lens < 0).any())):
                raise ValueError(
                    f"predict: '{l_key}' must be >= 0 and sum to the {n} ids of '{v_key}' "
                    f"(sum {int(lens.sum())}, min {int(lens.min())})"
                )
            if not self._multi_hot[i] and (n != batch or bool((lens != 1).any())):
                raise ValueError(
                    f"predict: single-hot feature '{name}' takes one id per row: '{v_key}' of {batch} ids and "
                    f"'{l_key}' all 1 (got {n} ids, lengths {lens.tolist()[:8]})"
                )
        raise AssertionError("Pt2Program: the length check disagrees with itself")


def load_program(path: str | Path, features: Sequence[SparseFeature], dense_dim: int) -> Pt2Program:
    """``Pt2Program`` of an AOTInductor package (no hash check: for a package this process just wrote)."""
    return Pt2Program(torch._inductor.aoti_load_package(str(path)), features, dense_dim)


def load_pt2(path: str | Path) -> ExportedModel:
    """``model.pt2`` + ``metadata.json`` of an exported directory, the package's sha256 checked first.

    Raises:
        FileNotFoundError: ``path`` or one of its files is missing.
        ValueError: ``metadata.json`` lists no ``model.pt2`` (exported without ``--pt2``), the file's
            size or sha256 differs from the listed one (stale or corrupt: ``ArtifactMismatch``), or the
            package does not load.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"--model {p} is not an exported model directory (from `c2al-rec export`)")
    for name in (PT2_FILE, METADATA_FILE):
        if not (p / name).is_file():
            hint = " (export with --pt2 to write it)" if name == PT2_FILE else ""
            raise FileNotFoundError(f"{p} has no {name}{hint}")
    metadata = read_metadata(p)
    # the package holds a shared library: its bytes must be the exported ones before anything loads it
    verify_artifact(p, PT2_FILE, metadata)
    dense_dim = len(metadata["dense"])
    features = [
        SparseFeature(f["name"], f["num_embeddings"], f["multi_hot"], f.get("pooling", "sum"), f["out_of_range"])
        for f in metadata["sparse"]
    ]
    try:
        program = load_program(p / PT2_FILE, features, dense_dim)
    except Exception as e:  # the AOTInductor loader raises RuntimeError and others for a damaged package
        raise ValueError(f"{p / PT2_FILE}: not a loadable AOTInductor package: {_first_line(e)}") from None
    return ExportedModel(program, metadata, p)
