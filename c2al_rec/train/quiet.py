"""The console noise that cannot be fixed in this package, filtered by message AND module, in one place.

Fixed at the source instead (so not here): the planner's topology (``TopologyFactory``), its storage
reservation (``FixedPercentageStorageReservation``), DCP loads in one process (``no_dist=True``), torchrun's
OMP_NUM_THREADS banner (the torchx components set OMP_NUM_THREADS).

``quiet_known_noise()`` is called by every entry point: ``c2al-rec`` (``cli.main``), each rank
(``train.launch.run_rank``) and ``python -m c2al_rec.train``. It imports neither torch nor torchrec.
"""

from __future__ import annotations

import logging
import warnings

# (logger, message prefix): records that torch logs at WARNING and that our code cannot avoid.
_LOG_RECORDS = [
    # torch.fx's ProxyableClassMeta (the metaclass of torchrec's KeyedJaggedTensor) and torchrec's
    # KTRegroupAsDict call the deprecated ``torch.fx._symbolic_trace.is_fx_tracing()`` on every
    # construction; the calls are inside torch and torchrec, not ours, so the once-per-process
    # warning comes whatever we do.
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true for both fx.symbolic_trace and torch.export"),
]


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    """Install the filters below (idempotent)."""
    # torch.jit.script of the export meets torchrec's own TorchScript classes, some of which annotate
    # a tensor as a dtype-specific subtype (torch.IntTensor); the annotation is torchrec's code.
    warnings.filterwarnings(
        "ignore",
        message="TorchScript will treat type annotations of Tensor dtype-specific subtypes",
        category=UserWarning,
        module="torch.jit.annotations",
    )
    # torchrec 1.8's DefaultDataParallelWrapper passes DDP ``broadcast_buffers=False``, which torch
    # 2.13 deprecates; passing the replacement as well only trades it for another warning, and
    # re-implementing torchrec's private wrapper to avoid it is not worth the drift.
    warnings.filterwarnings(
        "ignore",
        message="`broadcast_buffers` is deprecated",
        category=FutureWarning,
        module="torchrec.distributed.model_parallel",
    )
    # torchrec 1.8's sharded modules hold ShardedTensor state dicts; DCP loading them on resume and
    # export calls ShardedTensor methods that torch 2.13 marks deprecated in favour of DTensor. The
    # state-dict type is torchrec's choice, so the warning says nothing a user can act on.
    warnings.filterwarnings(
        "ignore",
        message="Please use DTensor instead and we are deprecating ShardedTensor",
        category=FutureWarning,
        module="torch",  # attributed to the caller: torch.distributed.* or torchrec.* ("torch" matches both)
    )
    for name, prefix in _LOG_RECORDS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in log.filters):
            log.addFilter(_DropMessages(prefix))
