"""This host's memory, read before anything large is allocated (``/proc/meminfo``, else ``sysconf``)."""

from __future__ import annotations

import os
from typing import Optional

GIB = 2**30


def host_memory_bytes() -> tuple[Optional[int], Optional[int]]:
    """``(available, total)`` bytes of this host's RAM (MemAvailable / MemTotal; None where unknown)."""
    available = total = None
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:]}
        available, total = fields.get("MemAvailable"), fields.get("MemTotal")
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            available = available or os.sysconf("SC_AVPHYS_PAGES") * page
        except (OSError, ValueError, AttributeError):
            pass
    return available, total


def check_host_memory(need: int, what: str, remedy: str) -> None:
    """Refuse a planned allocation of ``need`` bytes that exceeds this host's available memory.

    Args:
        need: bytes the operation will allocate.
        what: what needs them, named in the message (``"generating data.synthetic.max_table_size = 5e8"``).
        remedy: what the user can change, ending the message.

    Raises:
        ValueError: one line: what needs how many GiB, and what the machine has.
    """
    available, total = host_memory_bytes()
    if available is None or need <= available:
        return
    of_total = f" of {total / GIB:.1f} GiB" if total else ""
    raise ValueError(
        f"{what} needs about {need / GIB:.1f} GiB of memory but this machine has {available / GIB:.1f} GiB "
        f"available{of_total}: {remedy}"
    )
