"""The FM interaction custom op ``c2al::fm_interaction`` and its kernels."""

from .fm_interaction import KERNELS, fm_interaction, fm_interaction_reference, select_kernel

__all__ = ["KERNELS", "fm_interaction", "fm_interaction_reference", "select_kernel"]
