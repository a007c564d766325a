"""Train entry points: preflight checks (before any process group), the per-rank worker, launch.

``c2al-rec train`` and ``python -m c2al_rec.train`` (under torchrun) both end up in ``run_rank``.
Before the first step, and before anything is written into the run directory, ``preflight``
checks what would otherwise fail late: the splits the run reads (readable, columns and types as
schema.json says, at least one global batch each), the cohort axis, and the tables' memory
against this host's. The launching process then claims the run directory (``rundir``: one
writer, no reuse of another run's directory without ``--resume`` or ``--overwrite``).

Errors: a user error on any rank (``config.errors.error_line``: bad config or data, an OS error such as
a full disk, out of memory) ends the launch as one line, ``rank N: <path>: <meaning> (<ERRNO>)`` for an
OS error; the elastic launch's ranks raise it as ``RankFailed`` and torchelastic's dump of it is dropped.
A bug keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from c2al_rec.cohorts.spec_file import load_cohort_spec
from c2al_rec.config import Config, config_to_dict, load_config_dict
from c2al_rec.config.errors import error_line, unwrap_checkpoint_failure
from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.schema import DatasetSchema, load_schema
from c2al_rec.data.sources import ensure_dataset
from c2al_rec.distributed.memory import check_table_memory, table_memory_bytes

from .quiet import quiet_known_noise
from .rundir import RunLock, check_run_dir, claim_run_dir
from .tracking import check_tracking


def preflight_config_only(cfg: Config) -> Config:
    """Make the config's paths absolute (data.path, cohorts.spec, checkpoint.init_from); checks nothing else."""
    if not cfg.data.path:
        raise ValueError("data.path is empty: set it in the config's [data] section or with --data.path=DIR")
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else p  # noqa: E731
    return replace(
        cfg,
        data=replace(cfg.data, path=absolute(cfg.data.path)),
        cohorts=replace(cfg.cohorts, spec=absolute(cfg.cohorts.spec)),
        checkpoint=replace(cfg.checkpoint, init_from=absolute(cfg.checkpoint.init_from)),
    )


def preflight(cfg: Config, generate: bool = True, world_size: int = 1, hosts: int = 1) -> Config:
    """Validate what can be validated before processes start; generate synthetic data if configured.

    Args:
        cfg: the run config.
        generate: generate / convert the dataset when missing (rank 0 only).
        world_size: ranks of the job (a split needs one batch per rank at least).
        hosts: machines the job spans (the tables' memory is shared between them).

    Returns the config with ``data.path`` made absolute. Raises ValueError / FileNotFoundError
    naming the flag, file or column at fault.
    """
    cfg = preflight_config_only(cfg)
    check_tracking(cfg)
    data = cfg.data
    if generate:
        ensure_dataset(data)
    elif not Path(data.path).is_dir():
        raise FileNotFoundError(f"data.path {data.path} does not exist")
    schema = load_schema(data.path)
    for split in (data.train_split, data.valid_split):
        if not schema.split_dir(split).is_dir():
            raise FileNotFoundError(
                f"data.path {data.path}: split '{split}' ({schema.split_dir(split)}) does not exist"
            )
    if cfg.cohorts.spec:
        spec = load_cohort_spec(cfg.cohorts.spec)
        axes = [a.name for a in schema.axes]
        if spec.axis not in axes:
            raise ValueError(
                f"cohort spec {cfg.cohorts.spec}: axis '{spec.axis}' is not an axis of {data.path} (axes: {axes})"
            )
    for name in ("init_from",):
        value = getattr(cfg.checkpoint, name)
        if value and not Path(value).exists():
            raise FileNotFoundError(f"checkpoint.{name} {value} does not exist")
    _check_splits(cfg, schema, world_size)
    _check_memory(cfg, schema, hosts)
    return replace(cfg, data=data)


def _check_splits(cfg: Config, schema: DatasetSchema, world_size: int) -> None:
    """Every split the run reads (train; valid, which every run scores at its end) opens and holds at
    least one global batch: footers, columns and types against schema.json, no row read."""
    batch = cfg.data.batch_size
    for role, split in (("train", cfg.data.train_split), ("valid", cfg.data.valid_split)):
        reader = ParquetReader(
            cfg.data.path, schema, split, batch, world_size=world_size, shuffle=False, shuffle_buffer=0
        )
        if len(reader) == 0:
            what = "training" if role == "train" else "validation"
            raise ValueError(
                f"data.path {cfg.data.path}: the {role} split '{split}' has {reader.total_rows} rows, fewer than one "
                f"global batch ({batch} x {world_size} ranks): {what} would read nothing (lower data.batch_size)"
            )


def _check_memory(cfg: Config, schema: DatasetSchema, hosts: int) -> None:
    """Tables + sparse-optimizer state vs this host's available memory (CPU training: tables live there)."""
    from c2al_rec.distributed.backend import choose_backend

    if choose_backend()[1].type != "cpu":
        return  # tables live in GPU memory: the planner's topology (the device's real HBM) checks them
    need = table_memory_bytes(
        (f.num_embeddings for f in schema.sparse), cfg.model.embedding_dim, cfg.train.sparse_optimizer
    )
    check_table_memory(need, hosts, f"{Path(cfg.data.path) / 'schema.json'} x model.embedding_dim")


def run_rank(cfg_dict: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Train on this rank (env: torchrun-style RANK/WORLD_SIZE...); returns the final metrics."""
    from c2al_rec.distributed.backend import destroy_distributed, init_distributed

    from .trainer import Trainer

    quiet_known_noise()  # a spawned rank starts with no filters of its parent
    cfg = load_config_dict(cfg_dict)
    ctx = init_distributed()
    trainer = Trainer(cfg, Path(run_dir), ctx)
    try:
        trainer.build()
        metrics = trainer.train()
        trainer.close(metrics)
    except BaseException as e:
        name_the_path(e, run_dir)
        if trainer.run_log is not None:
            with contextlib.suppress(OSError):  # train.log may be on the full disk that stopped the run
                trainer.run_log.line(f"[train] error: {error_line(e) or f'{type(e).__name__}: {e}'}")
        with contextlib.suppress(Exception):  # closing TensorBoard flushes (a full disk): it must not hide the error
            trainer.shutdown("FAILED")
        raise
    finally:
        trainer.shutdown("FAILED")  # a no-op after close() or the error path: TensorBoard / MLflow / train.log released
        destroy_distributed()
    return metrics


def name_the_path(e: BaseException, run_dir: str | Path) -> None:
    """Give an OSError that names no file (a failed write(2): a full disk) the run directory it wrote into.

    Code that knows the exact file names it (the checkpoint writer, ``atomic_write_*``); this is the
    last resort, so that every OS error of a run names a path. Unwraps DCP's CheckpointException.
    """
    inner = unwrap_checkpoint_failure(e) or e
    if isinstance(inner, OSError) and inner.errno in _WRITE_ERRNOS and inner.filename is None:
        inner.filename = str(run_dir)


# errnos of a failed write(2) that carry no file name (a connection's errors are not the run directory's)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def wait_for_dataset(cfg: Config, timeout_s: float = 3600) -> None:
    """Non-zero ranks wait for rank 0 to finish generating the dataset (no process group yet)."""
    schema_file = Path(cfg.data.path).expanduser() / "schema.json"
    deadline = time.monotonic() + timeout_s
    while not schema_file.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {os.environ.get('RANK')}: {schema_file} did not appear in {timeout_s}s")
        time.sleep(0.5)


def job_hosts() -> int:
    """Machines of a torchrun job (WORLD_SIZE / LOCAL_WORLD_SIZE); 1 outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, world // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))))


def claim(cfg: Config, run_dir: Path, overwrite: bool) -> Optional[RunLock]:
    """Claim ``run_dir`` for this job (``rundir.claim_run_dir``) on the launching process or rank 0.

    Other ranks of a torchrun job return None: they start only after rank 0 has joined the
    process group, i.e. after it holds the lock (and cleared the directory on ``overwrite``).
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return claim_run_dir(Path(run_dir), cfg.checkpoint.resume, overwrite)


def launch(
    cfg: Config, run_dir: Path, nproc_per_node: int = 1, max_restarts: int = 0, overwrite: bool = False
) -> Optional[dict[str, Any]]:
    """Run training in this process (1 rank) or on ``nproc_per_node`` local ranks (elastic launch).

    Args:
        cfg: the run config.
        run_dir: the run directory (``--out``).
        nproc_per_node: local ranks; 1 trains in this process.
        max_restarts: elastic restarts after a rank fails (they resume from the newest checkpoint).
        overwrite: clear ``run_dir`` first, if it holds another run (``--overwrite``).

    Raises:
        ValueError: preflight failed, or ``run_dir`` is held by another writer or holds another run;
            nothing has been written into ``run_dir`` then.
    """
    if int(os.environ.get("RANK", "0")) == 0:
        check_run_dir(Path(run_dir), cfg.checkpoint.resume, overwrite)  # before preflight: a quick refusal
    world_size = nproc_per_node if "RANK" not in os.environ else int(os.environ.get("WORLD_SIZE", "1"))
    cfg = preflight(cfg, world_size=max(1, world_size), hosts=job_hosts())
    lock = claim(cfg, run_dir, overwrite)
    try:
        return _launch(cfg, Path(run_dir), nproc_per_node, max_restarts)
    finally:
        if lock is not None:
            lock.release()


def _launch(cfg: Config, run_dir: Path, nproc_per_node: int, max_restarts: int) -> Optional[dict[str, Any]]:
    cfg_dict = config_to_dict(cfg)
    if nproc_per_node <= 1 and "RANK" not in os.environ:
        return run_rank(cfg_dict, str(run_dir))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from c2al_rec.distributed.launch import launch_local

    quiet = _DropRankFailedDump()
    for log in quiet.LOGGERS:
        logging.getLogger(log).addFilter(quiet)
    try:
        results = launch_local(
            elastic_rank, (cfg_dict, str(run_dir)), nproc_per_node, f"c2al-{os.getpid()}", max_restarts
        )
    except ChildFailedError as e:
        raise _user_error(e) or e from None
    finally:
        for log in quiet.LOGGERS:
            logging.getLogger(log).removeFilter(quiet)
    return results[0]


class RankFailed(ValueError):
    """A rank's user error (see ``config.errors.error_line``) as one line that names the rank."""


def elastic_rank(cfg_dict: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """``run_rank`` in a rank started by the elastic launch: a user error leaves it as one ``RankFailed``
    line (the launcher reports it; torchelastic would otherwise dump the rank's traceback), a bug as is."""
    try:
        return run_rank(cfg_dict, run_dir)
    except BaseException as e:
        line = error_line(e)
        if line is None:
            raise
        raise RankFailed(f"rank {os.environ.get('RANK', '0')}: {line}") from None


class _DropRankFailedDump(logging.Filter):
    """Drops torchelastic's "failed (exitcode ...)" record (the rank's whole traceback) for a RankFailed:
    the launcher reports that as one line; a rank that failed with a bug keeps its traceback. Also drops
    torch's "Terminating process <pid> via signal SIGTERM" notices for the ranks stopped after another
    failed: they come before the failure is known, and say nothing the failure's report does not."""

    LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")
    MARK = f"{RankFailed.__module__}.{RankFailed.__qualname__}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Terminating process"):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        lines = [line for line in str(exc or "").splitlines() if line.strip()]
        return not (lines and lines[-1].startswith(self.MARK))


def _user_error(e: Any) -> Optional[RankFailed]:
    """The first failed rank's RankFailed line (None for a crash or a bug: torchelastic's report stands)."""
    _, failure = e.get_first_failure()
    text = failure.message  # the error file's {"message": "<Type>: <text>", "extraInfo": {...}}, or a string
    text = text.get("message", "") if isinstance(text, dict) else str(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kind, _, message = (lines[-1] if lines else "").partition(": ")
    if kind.rsplit(".", 1)[-1] == RankFailed.__name__ and message:
        return RankFailed(message)
    return None
