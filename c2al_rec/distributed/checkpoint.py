"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP): atomic, manifested, safely loaded.

Layout inside a run directory::

    checkpoints/step_<N>/      checkpoints (DCP files + train_state.json + rng.pt + MANIFEST.json)
    checkpoints/.tmp_step_<N>/ a write in progress (never loaded; removed by the next save)
    checkpoints/best           JSON naming the sibling step_<N> with the best validation NE

Writing: every rank writes its shards into the temp directory; rank 0 then adds the small files,
writes ``MANIFEST.json`` last (``{"files": {"<name>": {"bytes": N, "sha256": "<hex>"}}}`` for every
other file) and renames the directory, so a reader sees either a whole checkpoint or none.

Reading: a checkpoint is intact only when its manifest lists exactly the files present, with
their sizes and sha256. The newest intact checkpoint of a run is used (damaged newer ones are
skipped with a logged warning); a named ``step_<N>`` that fails the check is an error. DCP's
``.metadata`` is a pickle: it is read only through an allow-list unpickler (DCP's own metadata
classes, torch.Size and dtypes, builtin containers and scalars), non-tensor values with
``torch.load(weights_only=True)``, so a planted checkpoint cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)

from c2al_rec.io import (
    BASIC_GLOBALS,
    atomic_write_json,
    atomic_write_text,
    file_digest,
    file_sha256,
    restricted_load,
)
from c2al_rec.io.owned_dir import NotOwned, read_regular_file

logger = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step_(\d+)$")
TRAIN_STATE = "train_state.json"
RNG_FILE = "rng.pt"
MANIFEST = "MANIFEST.json"
METADATA = ".metadata"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_MANIFEST_BYTES = 16 << 20  # a step's MANIFEST.json lists a few files per rank
# DCP's .metadata holds a few hundred bytes per tensor chunk: 64 MiB is ~10^5 chunks, far past any run
# here, and bounds what a planted file costs before the unpickler's own budget applies.
METADATA_MAX_BYTES = 64 << 20

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
# Everything a DCP FileSystemWriter pickles into .metadata (listed from real checkpoints with a
# recording unpickler), and nothing else. torch.serialization._get_layout only maps a layout's
# name ("torch.strided") to the layout object; pathlib.PosixPath is StorageMeta.checkpoint_id.
DCP_METADATA_GLOBALS: frozenset[tuple[str, str]] = (
    BASIC_GLOBALS
    | {
        (_DCP_METADATA, name)
        for name in (
            "Metadata",
            "StorageMeta",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "MetadataIndex",
            "_MEM_FORMAT_ENCODING",
        )
    }
    | {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("pathlib", "PosixPath"),
    }
    | {("torch", name) for name, v in vars(torch).items() if isinstance(v, (torch.dtype, torch.memory_format))}
)


class IncompleteCheckpoint(ValueError):
    """A step_<N> directory that fails its manifest check (missing, malformed, or files that differ)."""


# ------------------------------------------------------------------------------- safe reading
def read_dcp_metadata(path: str | Path) -> Metadata:
    """Read a DCP ``.metadata`` file through the allow-list unpickler and check its shape.

    Raises:
        ValueError: a refused global, a damaged pickle, a file larger than ``METADATA_MAX_BYTES``,
            or metadata that is not DCP's (e.g. a storage entry pointing outside the checkpoint
            directory); names ``path``.
    """
    raw = read_regular_file(Path(path), METADATA_MAX_BYTES)  # the cap holds before a byte is unpickled
    metadata = restricted_load(raw, DCP_METADATA_GLOBALS, str(path))
    _check_metadata(metadata, path)
    return metadata


def _check_metadata(metadata: Any, path: str | Path) -> None:
    if not isinstance(metadata, Metadata) or not isinstance(metadata.state_dict_metadata, dict):
        raise ValueError(f"{path}: not DCP checkpoint metadata (got {type(metadata).__name__})")
    for fqn, md in metadata.state_dict_metadata.items():
        if not isinstance(md, (TensorStorageMetadata, BytesStorageMetadata)):
            raise ValueError(f"{path}: entry {fqn!r} has storage type {type(md).__name__}")
    if not isinstance(metadata.storage_data, dict):
        raise ValueError(f"{path}: storage_data is {type(metadata.storage_data).__name__}, not a dict")
    for info in metadata.storage_data.values():
        rel = getattr(info, "relative_path", None)
        # Data files are siblings of .metadata: never a path that could leave the checkpoint.
        if not isinstance(rel, str) or rel in ("", ".", "..") or "/" in rel or "\\" in rel:
            raise ValueError(f"{path}: storage entry names {rel!r}, not a file of this checkpoint")


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata read goes through the allow-list unpickler (not ``pickle.load``)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # Same as the parent's but for the unpickler; `rank` selects rank-local metadata files.
        path = self._get_metadata_path(kwargs.get("rank"))
        metadata = read_dcp_metadata(path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafeLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` that unpickles non-tensor values with ``weights_only=True`` (DCP's uses False)."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as e:
            # torch's message opens with advice to retry with weights_only=False: keep only the reason
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), type(e).__name__)
            raise ValueError(f"non-tensor value {read_item.dest_index.fqn!r} refused ({reason.strip()})") from e
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


# ------------------------------------------------------------------------------- manifest
def write_manifest(step_dir: Path) -> dict[str, Any]:
    """Write ``step_dir/MANIFEST.json`` listing every other file of ``step_dir`` (rank 0, last).

    Returns:
        The manifest written.
    """
    files = {}
    for f in sorted(Path(step_dir).iterdir(), key=lambda p: p.name):
        if f.name == MANIFEST:
            continue
        if not f.is_file() or f.is_symlink():
            raise ValueError(f"{f}: a checkpoint holds only regular files")
        files[f.name] = file_digest(f)
    manifest = {"files": files}
    atomic_write_json(Path(step_dir) / MANIFEST, manifest)
    return manifest


def verify_checkpoint(step_dir: str | Path, check_hashes: bool = True) -> None:
    """Check ``step_dir`` against its manifest: exactly the listed files, with their sizes and sha256.

    Args:
        step_dir: a ``step_<N>`` directory.
        check_hashes: also hash every file (False checks names and sizes only: a cheap test for pruning).

    Raises:
        IncompleteCheckpoint: (a ValueError) naming the file that is missing, extra, or differs.
    """
    step_dir = Path(step_dir)
    manifest_path = step_dir / MANIFEST
    if step_dir.is_symlink():
        raise IncompleteCheckpoint(f"{step_dir} is a symbolic link, not a checkpoint directory")
    try:
        raw = read_regular_file(manifest_path, _MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise IncompleteCheckpoint(f"{manifest_path} is missing (the checkpoint was never completed)") from None
    except NotOwned as e:  # a link (or a FIFO...) in place of the manifest: never followed
        raise IncompleteCheckpoint(str(e)) from None
    try:
        listed = json.loads(raw)["files"]
        entries = {name: (int(e["bytes"]), str(e["sha256"])) for name, e in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise IncompleteCheckpoint(f"{manifest_path}: malformed manifest ({type(e).__name__}: {e})") from e
    for name, (_, digest) in entries.items():
        if name in ("", ".", "..", MANIFEST) or "/" in name or "\\" in name or not _SHA256_RE.match(digest):
            raise IncompleteCheckpoint(f"{manifest_path}: malformed entry {name!r}")
    for required in (METADATA, TRAIN_STATE):
        if required not in entries:
            raise IncompleteCheckpoint(f"{manifest_path} does not list {required}")
    present = {p.name for p in step_dir.iterdir()} - {MANIFEST}
    extra = sorted(present - entries.keys())
    if extra:
        raise IncompleteCheckpoint(f"{step_dir / extra[0]} is not listed in {manifest_path}")
    for name, (size, digest) in entries.items():
        path = step_dir / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise IncompleteCheckpoint(f"{path} is missing (listed in {manifest_path})") from None
        if not stat.S_ISREG(st.st_mode):
            raise IncompleteCheckpoint(f"{path} is not a regular file")
        if st.st_size != size:
            raise IncompleteCheckpoint(f"{path} has {st.st_size} bytes, its manifest says {size}")
        if check_hashes and file_sha256(path) != digest:
            raise IncompleteCheckpoint(f"{path}: sha256 differs from {manifest_path}")


# ------------------------------------------------------------------------------- finding checkpoints
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _step_dirs(run_dir: Path) -> list[Path]:
    """All step_<N> directories of a run, oldest first, intact or not."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _is_intact(step_dir: Path, check_hashes: bool = True, warn: bool = True) -> bool:
    try:
        verify_checkpoint(step_dir, check_hashes)
        return True
    except IncompleteCheckpoint as e:
        if warn and _rank() == 0:
            logger.warning("skipping checkpoint %s: %s", step_dir, e)
        return False


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Intact checkpoints of a run (manifest verified, sha256 included), oldest first.

    Damaged or unfinished ``step_<N>`` directories are left out with a logged warning saying why.
    """
    return [p for p in _step_dirs(run_dir) if _is_intact(p)]


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest intact checkpoint of a run, or None when the run has no step_<N> directory at all.

    Newer damaged checkpoints are skipped (each with a logged warning), so a resume or an export
    falls back to the newest one that verifies; older ones are not hashed.

    Raises:
        ValueError: the run has step_<N> directories but none is intact (each one's reason named).
    """
    reasons = []
    for p in reversed(_step_dirs(run_dir)):
        try:
            verify_checkpoint(p)
            return p
        except IncompleteCheckpoint as e:
            if _rank() == 0:
                logger.warning("skipping checkpoint %s: %s; falling back to an older one", p, e)
            reasons.append(str(e))
    if reasons:
        raise ValueError(f"{run_dir}: no intact checkpoint ({'; '.join(reasons)})")
    return None


def best_checkpoint_name(run_dir: Path) -> Optional[str]:
    """The ``step_<N>`` named by ``checkpoints/best`` (None without a marker).

    Raises:
        ValueError: the marker is not JSON or names anything but a sibling ``step_<N>``
            (no '/', no '..'), so ``--which best`` can never leave the run directory.
    """
    marker = checkpoint_dir(run_dir) / "best"
    if not marker.is_file() and not marker.is_symlink():
        return None
    try:
        name = json.loads(read_regular_file(marker, 1 << 16))["checkpoint"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{marker}: malformed best marker ({type(e).__name__}: {e})") from e
    if not isinstance(name, str) or not STEP_RE.match(name):
        raise ValueError(f"{marker}: 'checkpoint' must name a sibling step_<N> directory, got {name!r}")
    return name


def resolve_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """A verified checkpoint: one ``step_<N>`` directory, or a run directory's newest intact one (or its best).

    Args:
        path: a run directory or one ``step_<N>`` directory.
        which: ``latest`` or ``best`` (for a run directory).

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
        ValueError: a named ``step_<N>`` (or the best one) fails its manifest check, a run has
            only damaged checkpoints, or the best marker is malformed; the message names the file.
    """
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    p = Path(path)
    if STEP_RE.match(p.name) and p.is_dir() and not checkpoint_dir(p).is_dir():
        verify_checkpoint(p)  # named explicitly: damage is an error, not a fallback
        return p
    if which == "best":
        name = best_checkpoint_name(p)
        if name is None:
            raise FileNotFoundError(f"{p}: no checkpoints/best marker (was validation run?)")
        best = checkpoint_dir(p) / name
        if not best.is_dir():
            raise FileNotFoundError(f"{checkpoint_dir(p) / 'best'} names {name}, which is missing")
        verify_checkpoint(best)
        return best
    latest = latest_checkpoint(p)
    if latest is None:
        raise FileNotFoundError(f"{p}: no complete checkpoint (expected a run directory or a step_<N> directory)")
    return latest


def read_train_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / TRAIN_STATE).read_text())


# ------------------------------------------------------------------------------- saving
def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


@contextmanager
def _single_process(single: bool) -> Iterator[None]:
    """Silence DCP's "assuming the intent is to save/load in a single process" when that IS the intent."""
    with warnings.catch_warnings():
        if single:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    train_state: dict[str, Any],
    keep: int,
    protect: Optional[str] = None,
) -> Path:
    """Save ``state`` (model / optimizer state dicts) at ``step``; collective over all ranks.

    Args:
        state: DCP-saveable nested dict (sharded tensors allowed).
        train_state: small JSON-able dict (step, data position, config...) written by rank 0.
        keep: newest checkpoints to keep; older ones are removed (``protect`` is never removed).

    Returns:
        The final ``step_<N>`` directory.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}"
    if _rank() == 0:
        for stale in root.glob(".tmp_step_*") if root.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    _barrier()
    with _single_process(not dist.is_initialized()):
        dcp.save(state, checkpoint_id=str(tmp))
    rng = torch.get_rng_state()
    gathered: list[Any] = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(gathered, rng)  # also the point where every rank's shards exist
    else:
        gathered = [rng]
    if _rank() == 0:
        torch.save({f"rank{r}": t for r, t in enumerate(gathered)}, tmp / RNG_FILE)
        (tmp / TRAIN_STATE).write_text(json.dumps(train_state, indent=2))
        write_manifest(tmp)  # last: a directory without it is never loaded
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep, protect)
    _barrier()
    return final


def prune_checkpoints(run_dir: Path, keep: int, protect: Optional[str]) -> None:
    """Remove all but the newest ``keep`` complete checkpoints, never ``protect`` (rank 0 only)."""
    _prune(checkpoint_dir(run_dir), keep, protect)


def _prune(root: Path, keep: int, protect: Optional[str]) -> None:
    # Names and sizes pick the candidates (hashing every kept checkpoint at every save would cost a
    # full read each); damaged step directories are not counted (nor removed): they are skipped at
    # load time. Before anything older is deleted the newest one is verified with its sha256s: a
    # checkpoint whose bytes changed at the same size must not be the only one left.
    ckpts = [p for p in _step_dirs(root.parent) if _is_intact(p, check_hashes=False, warn=False)]
    doomed = [old for old in ckpts[:-keep] if old.name != protect]
    if not doomed:
        return
    try:
        verify_checkpoint(ckpts[-1], check_hashes=True)
    except IncompleteCheckpoint as e:
        logger.warning("not pruning older checkpoints: the newest one fails its manifest check (%s)", e)
        return
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------- loading
def load_checkpoint(ckpt: Path, state: dict[str, Any], collective: Optional[bool] = None) -> None:
    """Load ``ckpt`` into ``state`` in place (resharding as needed), reading nothing that can run code.

    Call it on a checkpoint from ``resolve_checkpoint`` (manifest verified). The metadata goes
    through the allow-list unpickler (checked once up front, so a refused file fails with one
    clear error on every rank) and non-tensor values through ``torch.load(weights_only=True)``.

    Args:
        ckpt: a ``step_<N>`` directory.
        state: nested state dict to fill (sharded tensors allowed).
        collective: load collectively over the process group; default: when one is initialized.
            Pass False to fill an unsharded model in this process alone.

    Raises:
        ValueError: refused or malformed metadata, or a refused non-tensor value; names the file.
    """
    read_dcp_metadata(Path(ckpt) / METADATA)
    if collective is None:
        collective = dist.is_available() and dist.is_initialized()
    try:
        with _single_process(not collective):
            reader, planner = SafeFileSystemReader(ckpt), _SafeLoadPlanner()
            dcp.load(state, storage_reader=reader, planner=planner, no_dist=not collective)
    except CheckpointException as e:  # DCP wraps each rank's error; surface ours as the user error it is
        for failure in e.failures.values():
            exc = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(exc, ValueError):
                raise ValueError(f"{ckpt}: {exc}") from e
        raise


def check_tensor_claims(ckpt: Path, tensors: dict[str, torch.Tensor], claimed_by: str) -> int:
    """Check tensors about to be allocated against what the checkpoint really holds, before allocating.

    A checkpoint's ``train_state.json`` says how large the model is; building the model from that
    claim alone would allocate whatever it says. Each tensor must appear in the checkpoint's DCP
    metadata with the same shape, and the bytes stored for it in its shard files (which must exist,
    with every stored range inside its file) must cover its size.

    Args:
        ckpt: a verified ``step_<N>`` directory.
        tensors: the tensors the load would fill, keyed by DCP name (``model.model.<param>``); meta
            tensors (shape and dtype only).
        claimed_by: what claims their shapes, named in errors (``<ckpt>/train_state.json``).

    Returns:
        The bytes the tensors take.

    Raises:
        ValueError: one line naming the tensor whose claimed shape or stored bytes do not match.
    """
    metadata = read_dcp_metadata(Path(ckpt) / METADATA)
    stored: dict[str, int] = {}
    file_sizes: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        fqn = getattr(index, "fqn", None)
        if getattr(info, "transform_descriptors", None):
            raise ValueError(f"{ckpt}: tensor {fqn!r} is stored through transforms this reader does not accept")
        if info.relative_path not in file_sizes:
            try:
                file_sizes[info.relative_path] = (Path(ckpt) / info.relative_path).lstat().st_size
            except FileNotFoundError:
                missing = f"{ckpt}: tensor {fqn!r} is stored in {info.relative_path}, which is missing"
                raise ValueError(missing) from None
        offset, length = int(info.offset), int(info.length)
        if offset < 0 or length < 0 or offset + length > file_sizes[info.relative_path]:
            raise ValueError(
                f"{ckpt}: tensor {fqn!r} is stored at bytes {offset}..{offset + length} of {info.relative_path}, "
                f"which has {file_sizes[info.relative_path]}"
            )
        stored[fqn] = stored.get(fqn, 0) + length
    total = 0
    for fqn, tensor in tensors.items():
        md = metadata.state_dict_metadata.get(fqn)
        shape = list(tensor.shape)
        if not isinstance(md, TensorStorageMetadata):
            raise ValueError(f"{claimed_by} describes tensor {fqn} of shape {shape}, which {ckpt} does not hold")
        if list(md.size) != shape:
            raise ValueError(
                f"{claimed_by} describes tensor {fqn} of shape {shape}, but {ckpt}'s tensor metadata says "
                f"{list(md.size)}: refusing to build the model"
            )
        need = tensor.numel() * tensor.element_size()
        if stored.get(fqn, 0) < need:
            raise ValueError(
                f"{ckpt}: tensor {fqn} of shape {shape} takes {need} bytes, but its shard files hold "
                f"{stored.get(fqn, 0)} bytes of it: refusing to build the model"
            )
        total += need
    return total


def load_rng(ckpt: Path, rank: int) -> Optional[torch.Tensor]:
    """This rank's saved CPU RNG state (None when the checkpoint had fewer ranks)."""
    states = torch.load(Path(ckpt) / RNG_FILE, weights_only=True)
    return states.get(f"rank{rank}")


def write_best_marker(run_dir: Path, ckpt: Path, ne: float, step: int) -> None:
    """Point ``checkpoints/best`` at ``ckpt``, a sibling ``step_<N>`` (atomic write; rank 0 only)."""
    assert STEP_RE.match(ckpt.name), ckpt
    atomic_write_text(checkpoint_dir(run_dir) / "best", json.dumps({"checkpoint": ckpt.name, "ne": ne, "step": step}))


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
