"""Training and validation metrics through ``torchrec.metrics``.

Tasks: ``primary`` (NE, calibration, AUC, segmented NE over the cohort axis) and, with C2AL,
``head`` / ``tail`` (NE of each auxiliary head against its auxiliary label). Computed with
torchrec's ``RecMetricModule``, so states are reduced across ranks by torchrec itself.

Example::

    metrics = TrainMetrics(world_size=2, rank=0, batch_size=512, aux=True, num_segments=3)
    metrics.update(logits, labels, weights, aux_labels, segment)   # per step
    metrics.compute()  # lifetime: {"primary": {"ne", "calibration", "auc"}, "aux": {...}, "segments": [...]}
    metrics.compute_views()  # {"window": {...}, "lifetime": {...}}: the same keys, both views
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torchrec.metrics.auc import AUCMetric
from torchrec.metrics.calibration import CalibrationMetric
from torchrec.metrics.metric_module import RecMetricModule
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.ne import NEMetric
from torchrec.metrics.rec_metric import RecMetricList
from torchrec.metrics.segmented_ne import SegmentedNEMetric

SEGMENT_KEY = "cohort_segment"


class TrainMetrics:
    """NE / calibration / AUC of the primary head, NE of the aux heads, NE per cohort segment.

    Args:
        world_size: ranks in the job (torchrec reduces metric states across them).
        rank: this rank.
        batch_size: rows per rank per update (sizes torchrec's windows).
        aux: also track the ``head`` and ``tail`` auxiliary tasks.
        num_segments: cohorts of the segment axis (0: no segmented NE); rows in no cohort
            (index -1) go to an extra last group.
        window_batches: batches in torchrec's sliding window (``compute_views()["window"]``).
    """

    def __init__(
        self, world_size: int, rank: int, batch_size: int, aux: bool, num_segments: int = 0, window_batches: int = 100
    ) -> None:
        self.aux = aux
        self.num_groups = num_segments + 1 if num_segments else 0
        primary = RecTaskInfo(
            name="primary", label_name="primary_label", prediction_name="primary_pred", weight_name="primary_weight"
        )
        aux_tasks = [
            RecTaskInfo(name=t, label_name=f"{t}_label", prediction_name=f"{t}_pred", weight_name=f"{t}_weight")
            for t in (("head", "tail") if aux else ())
        ]
        common = dict(
            world_size=world_size,
            my_rank=rank,
            batch_size=batch_size,
            window_size=batch_size * world_size * window_batches,
            # one stacked state per metric for all tasks: half the update time of one state per task
            compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
        )
        metrics = [
            NEMetric(tasks=[primary] + aux_tasks, **common),
            CalibrationMetric(tasks=[primary], **common),
            AUCMetric(tasks=[primary], **common),
        ]
        if self.num_groups:
            metrics.append(
                SegmentedNEMetric(tasks=[primary], grouping_keys=SEGMENT_KEY, num_groups=self.num_groups, **common)
            )
        self.module = RecMetricModule(
            batch_size=batch_size,
            world_size=world_size,
            rec_tasks=[primary] + aux_tasks,
            rec_metrics=RecMetricList(metrics),
        )

    def update(
        self,
        logits: Dict[str, torch.Tensor],
        labels: torch.Tensor,
        weights: torch.Tensor,
        aux_labels: Optional[Dict[str, torch.Tensor]] = None,
        segment: Optional[torch.Tensor] = None,
    ) -> None:
        """Add one batch. ``logits[t]`` [B]; ``segment`` int64 [B] cohort index (-1: none)."""
        out: Dict[str, torch.Tensor] = {
            "primary_pred": torch.sigmoid(logits["primary"].detach().float()),
            "primary_label": labels,
            "primary_weight": weights,
        }
        if self.aux:
            assert aux_labels is not None, "aux metrics need aux labels"
            for t in ("head", "tail"):
                out[f"{t}_pred"] = torch.sigmoid(logits[t].detach().float())
                out[f"{t}_label"] = aux_labels[t]
                out[f"{t}_weight"] = weights
        if self.num_groups:
            assert segment is not None, "segmented NE needs the segment index"
            out[SEGMENT_KEY] = torch.where(segment < 0, self.num_groups - 1, segment)
        self.module.update(out)

    def compute(self) -> dict:
        """Lifetime metrics so far (collective: every rank must call it; torchrec reduces them to rank 0,
        the other ranks get the same keys with None values).

        AUC has no lifetime state in torchrec (it keeps a window buffer): its window value is given,
        which covers every row when ``window_batches`` exceeds the batches seen (as in validation).
        """
        return self.compute_views()["lifetime"]

    def compute_views(self) -> dict:
        """``{"window": {...}, "lifetime": {...}}`` from one collective compute.

        Each view is ``{"primary": {"ne", "calibration", "auc"}, "aux": {"head": {"ne"}, "tail": {"ne"}},
        "segments": [ne per cohort group]}``; ``window`` covers the last ``window_batches`` batches,
        ``lifetime`` every batch since this object was made (AUC: the window, see ``compute``).
        """
        raw = {k: float(v) for k, v in self.module.compute().items()}
        return {view: self._view(raw, view) for view in ("window", "lifetime")}

    def _view(self, raw: Dict[str, float], view: str) -> dict:
        def pick(metric: str, task: str) -> Optional[float]:
            value = raw.get(f"{metric}-{task}|{view}_{metric}")
            return raw.get(f"{metric}-{task}|window_{metric}") if value is None else value

        result: dict = {
            "primary": {
                "ne": pick("ne", "primary"),
                "calibration": pick("calibration", "primary"),
                "auc": pick("auc", "primary"),
            }
        }
        if self.aux:
            result["aux"] = {t: {"ne": pick("ne", t)} for t in ("head", "tail")}
        if self.num_groups:
            result["segments"] = [
                raw.get(f"segmented_ne-primary|{view}_segmented_ne_{g}") for g in range(self.num_groups)
            ]
        return result
