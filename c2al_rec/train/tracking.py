"""Where a run's numbers go besides the console: TensorBoard, ``train.log``, and optionally MLflow.

``RunTracker`` fans scalars out to TensorBoard (``<run>/tensorboard``) and, with
``train.track = "mlflow"``, to an MLflow run (params: the flattened config; metrics: the same names
as in TensorBoard; artifacts: ``metrics.json``, ``config.toml``, ``train.log``). ``RunLog`` keeps
``<run>/train.log``: the console's lines, timestamped, plus what only the file needs. Both live on
rank 0 only.

Example::

    tracker = RunTracker(run_dir, cfg)          # rank 0
    tracker.scalars({"train/loss_primary": 0.69, "train/lr_dense": 1e-3}, step=10)
    tracker.finish(metrics, {"valid/ne": 0.98})  # hparams + metrics.json artifact
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from c2al_rec.config import Config, config_to_dict
from c2al_rec.io.owned_dir import open_for_append

logger = logging.getLogger("c2al_rec.train")

LOG_FILE = "train.log"
MLFLOW_RUN_FILE = "mlflow_run.json"  # the MLflow run id, so that a resumed run logs into the same MLflow run


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def check_tracking(cfg: Config) -> None:
    """ValueError when ``train.track`` asks for a tracker that is not installed (before any process starts)."""
    if cfg.train.track == "mlflow" and not mlflow_available():
        raise ValueError(
            "train.track = 'mlflow' (--track mlflow) needs the MLflow client: pip install 'c2al-rec[mlflow]' "
            "(or pip install mlflow-skinny)"
        )


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts (alphanumerics, ``_ - . : /`` and spaces): others become ``_``
    (cohort names are free text, e.g. ``p95+``)."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"dense_lr": 1e-3}}`` -> ``{"train.dense_lr": 1e-3}``; lists and None become strings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


class _NoFollowFileHandler(logging.FileHandler):
    """A FileHandler that never appends through a symbolic link planted in the run directory."""

    def _open(self) -> Any:
        return open_for_append(Path(self.baseFilename))


class RunLog:
    """``<run>/train.log``: a FileHandler on the ``c2al_rec`` logger (rank 0).

    The trainer's console lines are written here (``line``), and so are the warnings of every
    ``c2al_rec.*`` logger (e.g. a skipped damaged checkpoint). The loggers' levels are left as they
    are; while the file is attached, warnings also still reach stderr when no logging is configured
    (Python's last-resort handler would stop printing them once a handler exists).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOG_FILE
        self.logger = logging.getLogger("c2al_rec")
        self.file = _LogFile(self.path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.file.setLevel(logging.DEBUG)
        self.handlers: list[logging.Handler] = [self.file]
        if not logging.getLogger().handlers:  # keep warnings on the console (the last-resort handler stops)
            console = logging.StreamHandler(sys.stderr)
            console.setLevel(logging.WARNING)
            self.handlers.append(console)
        for h in self.handlers:
            self.logger.addHandler(h)

    def line(self, text: str) -> None:
        """A line for the file only (the caller prints console lines itself).

        Raises the OSError (naming train.log) of this or an earlier failed write: a full disk stops the run.
        """
        self.file.handle(logging.LogRecord("c2al_rec.train", logging.INFO, __file__, 0, text, None, None))
        if self.file.error is not None:
            error, self.file.error = self.file.error, None
            raise error

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()


class _LogFile(_NoFollowFileHandler):
    """train.log's handler: never appends through a link, and a failed write (a full disk) is kept for
    ``RunLog.line`` to raise, naming the file, instead of logging's "--- Logging error ---" traceback on
    stderr for every record."""

    error: Optional[OSError] = None

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        if exc.errno and exc.filename is None:
            exc.filename = self.baseFilename
        self.error = self.error or exc


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError that names no file (a failed write: a full disk) names ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno and e.filename is None:
            e.filename = str(path)
        raise


def _drop_tensorboard_thread_dumps() -> None:
    """TensorBoard writes from a thread that keeps a failed write's OSError (a full disk) and raises it in
    the thread that logs next (``RunTracker`` names the directory then); the thread's own traceback of the
    same error on stderr is dropped. Every other thread's uncaught exception is printed as before."""
    previous = threading.excepthook
    if getattr(previous, "drops_tensorboard_dumps", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.drops_tensorboard_dumps = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class RunTracker:
    """TensorBoard scalars and hparams, and the same to MLflow with ``train.track = "mlflow"`` (rank 0).

    Args:
        run_dir: the run directory (TensorBoard logs go to ``<run_dir>/tensorboard``).
        cfg: the run config (params / hparams: its flattened fields; ``train.track``,
            ``train.mlflow_uri``, ``train.mlflow_experiment``).
        resume: reuse the MLflow run recorded in ``<run_dir>/mlflow_run.json`` (a resumed run).
    """

    def __init__(self, run_dir: Path, cfg: Config, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.params = flatten(config_to_dict(cfg))
        self.tb = _open_tensorboard(self.run_dir)
        self.mlflow: Optional[Any] = None
        self.mlflow_run_id: Optional[str] = None
        if cfg.train.track == "mlflow":
            self._start_mlflow(cfg, resume)

    def _start_mlflow(self, cfg: Config, resume: bool) -> None:
        check_tracking(cfg)
        from mlflow.tracking import MlflowClient

        if cfg.train.mlflow_uri.startswith("file:"):
            # A file: URI is the user's explicit choice of MLflow's file store, which MLflow >= 3.x refuses
            # unless opted in (it prefers a database backend; that needs SQLAlchemy, not in mlflow-skinny).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # A client of its own, not mlflow's global active run: several runs may train in one process.
        client = MlflowClient(tracking_uri=cfg.train.mlflow_uri or None)
        experiment = client.get_experiment_by_name(cfg.train.mlflow_experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = client.create_experiment(cfg.train.mlflow_experiment)
        recorded = self.run_dir / MLFLOW_RUN_FILE
        run_id = None
        if resume and recorded.is_file():
            run_id = json.loads(recorded.read_text()).get("run_id")
        if run_id is None:
            run = client.create_run(experiment_id, run_name=self.run_dir.name, tags={"run_dir": str(self.run_dir)})
            run_id = run.info.run_id
            recorded.write_text(json.dumps({"run_id": run_id, "tracking_uri": client.tracking_uri}) + "\n")
            from mlflow.entities import Param

            items = list(self.params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[i : i + 100]])
        self.mlflow, self.mlflow_run_id = client, run_id

    def scalars(self, values: Mapping[str, Optional[float]], step: int) -> None:
        """Log finite values under their names (``train/...``, ``valid/...``) at ``step``."""
        finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
        if self.tb is not None:
            with _writing(self.run_dir / "tensorboard"):
                for k, v in finite.items():
                    self.tb.add_scalar(k, v, step)
        if self.mlflow is not None and finite:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(mlflow_key(k), v, now, step) for k, v in finite.items()]
            for i in range(0, len(metrics), 1000):
                self.mlflow.log_batch(self.mlflow_run_id, metrics=metrics[i : i + 1000])

    def finish(self, final: Mapping[str, Optional[float]], artifacts: list[Path]) -> None:
        """hparams (the flattened config against ``final``, e.g. the final validation NE) and artifacts."""
        finite = {k: float(v) for k, v in final.items() if v is not None and math.isfinite(v)}
        if self.tb is not None and finite:
            hparams = {k: v for k, v in self.params.items()}
            # its own sub-directory ("hparams"), as TensorBoard's HPARAMS tab expects
            with _writing(self.run_dir / "tensorboard" / "hparams"):
                self.tb.add_hparams(hparams, {f"hparam/{k}": v for k, v in finite.items()}, run_name="hparams")
        if self.mlflow is not None:
            for path in artifacts:
                if Path(path).is_file():
                    self.mlflow.log_artifact(self.mlflow_run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        """Flush TensorBoard and end the MLflow run (``FINISHED`` or ``FAILED``); idempotent."""
        if self.tb is not None:
            tb, self.tb = self.tb, None  # closed once, even if the flush fails
            with _writing(self.run_dir / "tensorboard"):
                tb.close()
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run_id, status=status)
            self.mlflow = None


def _open_tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is pinned in requirements; tolerate its absence in slim images
        logger.warning("tensorboard not installed: no TensorBoard logs")
        return None
    _drop_tensorboard_thread_dumps()
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
