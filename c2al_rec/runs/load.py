"""Load a trained run: its DCP checkpoint, written at any world size, into an unsharded model here.

A non-collective DCP load fills full tensors from all shards, so export, discovery and evaluation
run on a plain ``C2ALModel``. The checkpoint is verified against its manifest (a run directory
falls back to its newest intact checkpoint) and its pickled DCP metadata is read through an
allow-list unpickler, so a checkpoint from elsewhere cannot run code here.

Example::

    run = load_run("runs/smoke")          # newest intact checkpoint
    probs = torch.sigmoid(run.model(dense, kjt)["primary"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from c2al_rec.cohorts.spec import CohortSpec
from c2al_rec.cohorts.spec_file import parse_cohort_spec
from c2al_rec.config import Config, load_config_dict
from c2al_rec.data.schema import schema_from_dict
from c2al_rec.distributed import checkpoint as ckpt_io
from c2al_rec.io.host import check_host_memory
from c2al_rec.modules.model import C2ALModel, build_run_model


@dataclass
class TrainedRun:
    """A trained run loaded unsharded: its model with what its checkpoint says about itself."""

    schema: Any
    """The dataset schema the model was trained with (DatasetSchema)."""
    model: C2ALModel
    """The model with the checkpoint's weights (aux heads present when trained with C2AL)."""
    cfg: Config
    """The run config stored in the checkpoint."""
    spec: Optional[CohortSpec]
    """The resolved cohort spec of the run (None when it had none)."""
    path: Path
    """The step_<N> directory loaded."""
    train_state: dict[str, Any]
    """The checkpoint's train_state.json."""


def load_run(path: str | Path, which: str = "latest", schema: Any = None) -> TrainedRun:
    """Build the run's model on CPU and fill it from a checkpoint.

    Args:
        path: a run directory or one ``step_<N>`` directory.
        which: ``latest`` or ``best`` (for a run directory).
        schema: the dataset schema to check the model against (its sparse features and dense
            columns must match the checkpoint's); None skips the check.

    Raises:
        ValueError: a named checkpoint fails its manifest check, its metadata is refused, or the
            model its train_state.json describes is not the one its tensors hold (or does not fit
            this host): all before the model is allocated.
    """
    ckpt = ckpt_io.resolve_checkpoint(path, which)
    state_json = ckpt_io.read_train_state(ckpt)
    cfg = load_config_dict(state_json["config"], f"{ckpt}/train_state.json")
    # The checkpoint carries the schema it was trained with: no need for the training data.
    trained_schema = schema_from_dict(state_json["schema"], cfg.data.path)
    if schema is not None:
        check_schema_matches(trained_schema, schema, ckpt)
    check_run_size(ckpt, cfg, trained_schema)
    model = build_run_model(cfg, trained_schema, torch.device("cpu"))
    wrapped = torch.nn.Module()
    wrapped.model = model  # same key prefix ("model.") as the TrainTask DMP wrapped
    state = {"model": wrapped.state_dict()}
    ckpt_io.load_checkpoint(ckpt, state, collective=False)  # this process alone, even inside a job
    wrapped.load_state_dict(state["model"])
    model.eval()
    spec_json = state_json.get("cohort_spec")
    spec = parse_cohort_spec(spec_json, f"{ckpt}/train_state.json") if spec_json else None
    return TrainedRun(trained_schema, model, cfg, spec, ckpt, state_json)


def check_run_size(ckpt: Path, cfg: Config, schema: Any) -> None:
    """Refuse, before allocating it, a model that the checkpoint's tensors do not back, or that does
    not fit in this host's memory.

    The model is built on the meta device (shapes only) from what ``train_state.json`` claims;
    every parameter must match the checkpoint's own tensor metadata and shard bytes
    (``checkpoint.check_tensor_claims``), so a doctored table size is refused here instead of
    being allocated.
    """
    wrapped = torch.nn.Module()
    wrapped.model = build_run_model(cfg, schema, torch.device("meta"))
    tensors = {f"model.{name}": t for name, t in wrapped.state_dict().items()}
    need = ckpt_io.check_tensor_claims(ckpt, tensors, f"{ckpt}/train_state.json")
    check_host_memory(need, f"loading checkpoint {ckpt}", "score it on a machine with more memory")


def check_schema_matches(trained: Any, schema: Any, ckpt: Path) -> None:
    """The data's model inputs (sparse features with table sizes, dense columns) must be the trained ones."""
    want = [(f.name, f.num_embeddings) for f in trained.sparse], list(trained.dense)
    got = [(f.name, f.num_embeddings) for f in schema.sparse], list(schema.dense)
    if want != got:
        raise ValueError(
            f"checkpoint {ckpt} was trained on sparse features {want[0]} and dense {want[1]}, "
            f"but the data has sparse {got[0]} and dense {got[1]}"
        )
