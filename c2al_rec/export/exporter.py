"""Export a checkpoint to a serving directory (model.pt, metadata.json, sample_input.pt), behind a parity gate.

Steps: load the DCP checkpoint unsharded; copy the model without its aux heads and with the FM
op in plain-PyTorch math (a Python custom op cannot be loaded without c2al_rec); optionally
quantize the embeddings (torchrec inference quantization); fx-trace + script; score held-out
rows with the exported and the training model; write ``model.pt``, ``metadata.json`` and
``sample_input.pt`` into a temp directory and rename it only if the gate passes. With ``pt2`` it
also compiles ``model.pt2`` (``export/pt2.py``), under the same fp32 gate, listed with its sha256 in
``metadata["artifacts"]``.

``metadata.json`` is also the model card: ``model_id`` (``<export dir name>-<first 12 hex of
sha256(model.pt)>``, what ``predict`` and ``serve`` report), ``git_commit`` (of the training run, from
its provenance.json; ``export_git_commit`` is the exporting tree's), ``config`` (the run config),
``data_fingerprint``, ``cohort_spec``, and ``evaluation``: the run's validation metrics when they
belong to the exported checkpoint's step (metrics.json, or the best-checkpoint marker), plus the
exported model's NE, calibration and AUC on the parity rows.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torchrec.inference.modules import quantize_embeddings
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.quant.embedding_modules import quant_prep_customize_row_alignment
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from c2al_rec.analysis.stats import auc, calibration, normalized_entropy
from c2al_rec.config import ExportConfig, config_to_dict
from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.transforms import SparseIdTransform
from c2al_rec.io import atomic_directory, atomic_write_json
from c2al_rec.io.digest import file_digest
from c2al_rec.runs.load import TrainedRun, load_run
from c2al_rec.runs.provenance import git_commit, package_versions
from c2al_rec.serve.archive_scan import check_archive
from c2al_rec.serve.artifact import ARTIFACTS_KEY, METADATA_FILE, MODEL_FILE, SAMPLE_FILE, compute_model_id
from c2al_rec.serve.pt2_model import PT2_FILE, load_program

from .pt2 import PT2_SIGNATURE, check_pt2_request, compile_serving_pt2
from .torchscript import ServingModel, script_serving

QUANT_DTYPES = {"int8": torch.qint8, "fp16": torch.float16}
INT8_ROW_ALIGNMENT = 4
BATCH_SIZES_CHECKED = (1, 7)


class ParityError(ValueError):
    """The exported model does not reproduce the training model; nothing was written."""


def kjt_to_inputs(dense: torch.Tensor, kjt: KeyedJaggedTensor) -> Dict[str, torch.Tensor]:
    """The ``predict`` input dict of a batch: ``dense`` and ``<f>.values`` / ``<f>.lengths`` (int64)."""
    inputs = {"dense": dense}
    for name, jt in kjt.to_dict().items():
        inputs[f"{name}.values"] = jt.values().to(torch.int64)
        inputs[f"{name}.lengths"] = jt.lengths().to(torch.int64)
    return inputs


def slice_inputs(inputs: Dict[str, torch.Tensor], names: list[str], start: int, stop: int) -> Dict[str, torch.Tensor]:
    """Rows [start, stop) of a ``predict`` input dict."""
    out = {"dense": inputs["dense"][start:stop]}
    for n in names:
        lengths = inputs[f"{n}.lengths"]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        out[f"{n}.values"] = inputs[f"{n}.values"][offsets[start] : offsets[stop]]
        out[f"{n}.lengths"] = lengths[start:stop]
    return out


def quantize_for_serving(model: torch.nn.Module, quantize: str) -> torch.nn.Module:
    """Quantize the embedding tables in place with torchrec's inference quantization (int8 / fp16)."""
    if quantize not in QUANT_DTYPES:
        raise ValueError(f"--quantize: expected none, int8 or fp16, got '{quantize}'")
    # FBGEMM pads quantized rows to 16 bytes by default (d + scale/bias -> 80 bytes at d=64);
    # 4-byte alignment stores the same values in 68 bytes (0.27 of fp32 instead of 0.31).
    quant_prep_customize_row_alignment(model, [EmbeddingBagCollection], INT8_ROW_ALIGNMENT)
    return quantize_embeddings(model, dtype=QUANT_DTYPES[quantize], inplace=True)


def build_serving(loaded: TrainedRun, quantize: str = "none") -> tuple[torch.jit.ScriptModule, int]:
    """Script the primary-only serving model; returns it and the float model's parameter count."""
    model = copy.deepcopy(loaded.model).without_aux_heads()
    model.use_reference_fm(True)
    model.eval()
    # parameters of the float model: the cost of the architecture, whatever the storage format
    num_params = sum(p.numel() for p in model.parameters())
    if quantize != "none":
        model = quantize_for_serving(model, quantize)
    serving = ServingModel(SparseIdTransform(loaded.schema.sparse), model).eval()
    return script_serving(serving, [f.name for f in loaded.schema.sparse]), num_params


@torch.no_grad()
def parity_scores(
    loaded: TrainedRun, scripted: list[torch.jit.ScriptModule], data: str | Path, split: str, rows: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, Dict[str, torch.Tensor]]:
    """Training-model and exported-model probabilities on the first ``rows`` rows of ``split``."""
    reader = ParquetReader(data, loaded.schema, split, min(rows, 2048), shuffle=False, drop_last=False)
    names = [f.name for f in loaded.schema.sparse]
    ref, outs, labels, sample = [], [[] for _ in scripted], [], None
    seen = 0
    for batch in reader:
        ref.append(torch.sigmoid(loaded.model(batch.dense_features, batch.sparse_features)["primary"]).numpy())
        inputs = kjt_to_inputs(batch.dense_features, batch.sparse_features)
        for i, s in enumerate(scripted):
            outs[i].append(s.predict(inputs).numpy())
        labels.append(batch.labels.numpy())
        if sample is None:
            sample = slice_inputs(inputs, names, 0, min(8, batch.batch_size))
        seen += batch.batch_size
        if seen >= rows:
            break
    if sample is None:
        raise ValueError(f"parity gate: split '{split}' of {data} has no rows")
    return np.concatenate(ref)[:rows], [np.concatenate(o)[:rows] for o in outs], np.concatenate(labels)[:rows], sample


def model_card(
    loaded: TrainedRun, probs: np.ndarray, labels: np.ndarray, split: str, data_root: Path
) -> dict[str, Any]:
    """Provenance and evaluation of the exported checkpoint (the ``metadata.json`` fields besides the
    input contract): git commit, config, data fingerprint, cohort spec, evaluation metrics."""
    state = loaded.train_state
    step = state.get("step")
    run_dir = loaded.path.parent.parent  # <run>/checkpoints/step_<N>
    provenance = _read_json(run_dir / "provenance.json") or {}
    validation: Optional[dict[str, Any]] = None
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is not None and metrics.get("steps") == step:
        validation = {"source": "metrics.json", **metrics}
    elif (state.get("best") or {}).get("step") == step:
        validation = {"source": "checkpoint best marker", "primary": {"ne": state["best"]["ne"]}}
    return {
        "git_commit": provenance.get("git_commit", "unknown"),
        "export_git_commit": git_commit(),
        "config": state.get("config") or config_to_dict(loaded.cfg),
        "data_fingerprint": state.get("fingerprint"),
        "cohort_spec": state.get("cohort_spec"),
        "evaluation": {
            "step": step,
            # validation of the training model at this checkpoint (None: no validation ran at this step)
            "validation": validation,
            "validation_split": loaded.cfg.data.valid_split,
            # the exported model itself on the parity rows
            "exported": {
                "split": split,
                "data": str(data_root),
                "rows": int(len(labels)),
                "ne": _finite(normalized_entropy(probs, labels)),
                "calibration": _finite(calibration(probs, labels)),
                "auc": _finite(auc(probs, labels)),
            },
        },
    }


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _finite(x: Any) -> Optional[float]:
    return float(x) if x is not None and np.isfinite(float(x)) else None


@torch.no_grad()
def check_export_out(out: Path) -> None:
    """``out`` may be new, empty, or an earlier export (replaced whole); anything else is refused.

    The export replaces ``out`` as a whole directory, so an existing file, or a directory holding
    something other than an export (a run directory, a dataset), is a ValueError naming it.
    """
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a directory")
            break
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; export writes a directory (model.pt, metadata.json, ...)")
    if any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise ValueError(
            f"--out {out} is a non-empty directory that is not an exported model (no {METADATA_FILE}); "
            f"export replaces its --out whole, so choose a new or empty directory"
        )


def export_checkpoint(
    cfg: ExportConfig,
    checkpoint: str | Path,
    out: str | Path,
    *,
    which: str = "latest",
    data: Optional[str | Path] = None,
    split: str = "test",
    selection: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Export, gate, write. Returns the metadata written. Raises ParityError (nothing written) on failure.

    Args:
        cfg: the ``[export]`` section: quantization, the parity gate's rows and limits, ``pt2``.
        checkpoint: run directory or one ``step_<N>`` directory.
        out: export directory to write (replaced atomically).
        which: checkpoint of a run directory: ``latest`` or ``best``.
        data: dataset root of the parity rows (None: the run's ``data.path``).
        split: held-out split of the parity rows.
        selection: how this model was chosen among candidates (``pipeline``'s select stage), copied
            into metadata.json as ``selection``.
    """
    quantize, max_abs_diff, ne_tolerance = cfg.quantize, cfg.parity_max_abs_diff, cfg.parity_ne_tolerance
    check_export_out(Path(out))  # before the costly part: a bad --out fails at once
    if cfg.pt2:
        check_pt2_request(quantize)  # int8/fp16 tables, no C++ compiler: one line, before the costly part
    loaded = load_run(checkpoint, which)
    data_root = Path(data) if data is not None else Path(loaded.cfg.data.path)
    scripted, num_params = build_serving(loaded, quantize)
    candidates = [scripted]
    if quantize != "none":
        fp32, _ = build_serving(loaded, "none")
        candidates.append(fp32)
    pt2_dir = tempfile.TemporaryDirectory(prefix="c2al-pt2-") if cfg.pt2 else None
    if pt2_dir is not None:
        pt2_path = Path(pt2_dir.name) / PT2_FILE
        pt2_seconds = compile_serving_pt2(loaded, pt2_path)
        candidates.append(load_program(pt2_path, loaded.schema.sparse, len(loaded.schema.dense)))
    ref, outs, labels, sample = parity_scores(loaded, candidates, data_root, split, cfg.parity_rows)
    parity: dict[str, Any] = {"rows": int(len(ref)), "split": split, "data": str(data_root)}
    if quantize == "none":
        diff = float(np.abs(outs[0] - ref).max())
        parity.update(max_abs_diff=diff, limit=max_abs_diff)
        if not diff <= max_abs_diff:
            raise ParityError(
                f"parity gate failed: exported fp32 model differs from the training model's primary head by "
                f"max |dp| = {diff:.3g} > {max_abs_diff:g} on {len(ref)} rows; nothing written"
            )
    else:
        ne_q, ne_fp32 = normalized_entropy(outs[0], labels), normalized_entropy(outs[1], labels)
        rel = (ne_q - ne_fp32) / ne_fp32
        parity.update(
            ne=ne_q,
            ne_fp32=ne_fp32,
            ne_rel_change=rel,
            limit=ne_tolerance,
            max_abs_diff_vs_fp32=float(np.abs(outs[0] - outs[1]).max()),
        )
        if not abs(rel) <= ne_tolerance:
            raise ParityError(
                f"parity gate failed: {quantize} NE {ne_q:.6f} vs fp32 {ne_fp32:.6f} ({100 * rel:+.3f}%, limit "
                f"{100 * ne_tolerance:.2f}%) on {len(ref)} rows; nothing written"
            )
    if pt2_dir is not None:  # the fp32 gate of model.pt, against the training model
        diff = float(np.abs(outs[-1] - ref).max())
        parity["pt2"] = {"max_abs_diff": diff, "max_abs_diff_vs_torchscript": float(np.abs(outs[-1] - outs[0]).max())}
        if not diff <= max_abs_diff:
            raise ParityError(
                f"parity gate failed: {PT2_FILE} differs from the training model's primary head by max |dp| = "
                f"{diff:.3g} > {max_abs_diff:g} on {len(ref)} rows; nothing written"
            )
    # TorchScript can freeze batch-dependent shapes: the first rows at batch 1 and 7 must agree.
    names = [f.name for f in loaded.schema.sparse]
    for b in BATCH_SIZES_CHECKED:
        for model, probs in zip([scripted, candidates[-1]] if pt2_dir else [scripted], [outs[0], outs[-1]]):
            with torch.no_grad():
                part = model.predict(slice_inputs(sample, names, 0, min(b, sample["dense"].shape[0]))).numpy()
            if not np.allclose(part, probs[: len(part)], atol=1e-6):
                raise ParityError(f"parity gate failed: batch size {b} gives different probabilities; nothing written")
    metadata = {
        "format_version": 1,
        "dense": list(loaded.schema.dense),
        "sparse": [asdict(f) for f in loaded.schema.sparse],
        "dense_dim": len(loaded.schema.dense),
        "label": loaded.schema.label,
        "weight": loaded.schema.weight,
        "row_id": loaded.schema.row_id,
        "axes": [a.name for a in loaded.schema.axes],
        "input_signature": {
            "forward": "forward(dense: float32 [B, D], kjt: KeyedJaggedTensor keys=sparse order) -> float32 [B]",
            "predict": "predict({'dense': float32 [B, D], '<f>.values': int64 [N_f], '<f>.lengths': int64 [B]}) "
            "-> float32 [B]",
            **({"pt2": PT2_SIGNATURE} if cfg.pt2 else {}),
        },
        "quantize": quantize,
        "parameters": num_params,
        "trained_with_c2al": bool(loaded.cfg.cohorts.enabled),
        "source_checkpoint": str(loaded.path.resolve()),
        "source_step": loaded.train_state.get("step"),
        "versions": package_versions(),
        "parity": parity,
        **model_card(loaded, outs[0], labels, split, data_root),
    }
    if selection is not None:
        metadata["selection"] = selection
    with atomic_directory(out) as tmp:
        scripted.save(str(tmp / MODEL_FILE))
        check_archive(tmp / MODEL_FILE)  # what serve would refuse is not written (the allow-list is out of date)
        if pt2_dir is not None:
            shutil.copyfile(pt2_path, tmp / PT2_FILE)
            pt2_dir.cleanup()
            metadata["pt2_export_seconds"] = pt2_seconds
        # the id names the final directory (tmp is renamed to out) and the bytes of model.pt
        metadata = {"model_id": compute_model_id(out, tmp / MODEL_FILE), **metadata}
        artifacts = [MODEL_FILE] + ([PT2_FILE] if pt2_dir is not None else [])
        metadata[ARTIFACTS_KEY] = {name: file_digest(tmp / name) for name in artifacts}  # loading checks these
        atomic_write_json(tmp / METADATA_FILE, metadata)
        # clone: the slices are views, and torch.save would store their whole parent batch
        torch.save({k: v.clone() for k, v in sample.items()}, tmp / SAMPLE_FILE)
    return metadata
