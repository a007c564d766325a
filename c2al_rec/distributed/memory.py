"""Embedding-table memory vs the host's memory, checked before anything is allocated (no torchrec import).

The planner's default topology assumes 128 GB of host memory per rank, so a table that cannot fit
this machine used to go straight to a failing allocation. ``check_table_memory`` compares the
tables' fp32 weights plus their sparse-optimizer state with what the host has available, and
``host_memory_bytes`` is the figure the planner's topology is built from.

Example::

    need = table_memory_bytes([1000, 10**9], embedding_dim=8, sparse_optimizer="rowwise_adagrad")
    check_table_memory(need, hosts=1, where="data/x/schema.json")   # ValueError: tables need 33.5 GiB ...
"""

from __future__ import annotations

from typing import Iterable

from c2al_rec.io.host import GIB, host_memory_bytes

__all__ = ["GIB", "check_table_memory", "host_memory_bytes", "table_memory_bytes"]

# Optimizer state per table, in floats: (per row, per element). rowwise adagrad: one float per row;
# adagrad: one per element (same size as the table); adam: two per element; sgd: none.
_OPTIMIZER_STATE = {"rowwise_adagrad": (1, 0), "adagrad": (0, 1), "adam": (0, 2), "sgd": (0, 0)}


def table_memory_bytes(num_embeddings: Iterable[int], embedding_dim: int, sparse_optimizer: str) -> int:
    """Bytes of fp32 embedding tables plus their fused sparse-optimizer state.

    Args:
        num_embeddings: rows of each table.
        embedding_dim: columns of every table.
        sparse_optimizer: ``train.sparse_optimizer`` (rowwise_adagrad, adagrad, adam, sgd).
    """
    per_row, per_element = _OPTIMIZER_STATE[sparse_optimizer]
    floats_per_row = embedding_dim * (1 + per_element) + per_row
    return sum(int(n) * floats_per_row * 4 for n in num_embeddings)


def check_table_memory(need: int, hosts: int = 1, where: str = "schema.json") -> None:
    """Refuse tables that cannot fit in host memory, before any allocation.

    Args:
        need: ``table_memory_bytes`` of the model.
        hosts: machines the tables are sharded over (each is assumed to hold an equal share).
        where: what sets the table sizes, named in the message (the dataset's schema.json).

    Raises:
        ValueError: the share of one host exceeds its available memory; the message says how many
            GiB the tables need and how many the machine has.
    """
    available, total = host_memory_bytes()
    if available is None:
        return  # not Linux and no sysconf: the planner's topology check still applies
    share = need / max(1, hosts)
    if share > available:
        across = f" ({need / GIB:.1f} GiB over {hosts} hosts)" if hosts > 1 else ""
        of_total = f" of {total / GIB:.1f} GiB" if total else ""
        raise ValueError(
            f"the embedding tables need {share / GIB:.1f} GiB per host{across} (fp32 weights and sparse-optimizer "
            f"state; table sizes from {where}) but this machine has {available / GIB:.1f} GiB available{of_total}: "
            "reduce num_embeddings or model.embedding_dim, or shard over more hosts"
        )
