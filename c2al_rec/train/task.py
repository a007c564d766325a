"""The module DMP wraps in training: model + C2AL loss, ``forward(batch) -> (loss, outputs)``.

``TrainPipelineSparseDist`` calls ``task(batch)`` and back-propagates the returned loss; the
outputs feed the metrics. With C2AL off it trains the baseline (primary loss only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from c2al_rec.config import CohortsConfig

from .loss import aux_labels, aux_objective, c2al_loss


@dataclass
class CohortTarget:
    """The spec's cohorts the auxiliary heads target, with the ``[cohorts]`` section that weighs them."""

    axis: str
    """The spec's axis (the batch's cohort-index column)."""
    head_index: int
    """Index of the head cohort on that axis."""
    tail_index: int
    """Index of the tail cohort on that axis."""
    cohorts: CohortsConfig
    """``enabled`` (False: the axis is only reported as segmented NE, no aux loss), the lambdas, ``weighting``."""


class TrainTask(nn.Module):
    """Wrap ``model`` with the C2AL objective.

    Args:
        model: ``forward(dense [B, D], kjt) -> {"primary", ["head", "tail"]}`` logits [B].
        target: the cohort axis for aux labels / segment metrics; None when no spec is given.
        autocast_dtype: optional autocast dtype for the dense part of the forward (bf16).
        autocast_device: device type for autocast ("cuda" or "cpu").
        compile_dense: run the dense part (dense arch, over-arch, heads: everything after the
            embedding lookup) through ``torch.compile``; compiled on first use, after DMP has
            placed the parameters. The pipeline's fx trace and the diagnostics use the eager path.

    Example::

        cohorts = CohortsConfig(enabled=True, spec="cohorts.json")
        task = TrainTask(C2ALModel(...), CohortTarget("user_value", 2, 0, cohorts))
        loss, out = task(batch)
    """

    def __init__(
        self,
        model: nn.Module,
        target: Optional[CohortTarget],
        autocast_dtype: Optional[torch.dtype] = None,
        autocast_device: str = "cpu",
        compile_dense: bool = False,
    ):
        super().__init__()
        self.autocast_device = autocast_device
        self.compile_dense = compile_dense
        self._compiled_dense: Optional[Callable[..., Dict[str, torch.Tensor]]] = None
        self.model = model
        self.target = target
        self.autocast_dtype = autocast_dtype
        self.diagnose = False  # set by the trainer on sampled steps
        self.last_diagnostics: Optional[dict] = None

    def forward(self, batch) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
        dense = batch.dense_features
        sparse_tokens = self.model.sparse_arch(batch.sparse_features)  # [B, F, d]
        tracing = is_fx_symbolic_tracing()
        if self.compile_dense and not tracing:
            if self._compiled_dense is None:
                # dynamic batch dim: validation's last batch may be short; no recompile per size
                self._compiled_dense = torch.compile(self.dense_logits, dynamic=None)
            logits = self._compiled_dense(sparse_tokens, dense)
        else:
            logits = self.dense_logits(sparse_tokens, dense)
        labels, weights = batch.labels, batch.weights
        out: Dict[str, torch.Tensor] = {"labels": labels, "weights": weights}
        aux = None
        if self.target is not None:
            segment = batch.cohorts[self.target.axis]
            out["segment"] = segment
            if self.target.cohorts.enabled:
                aux = aux_labels(labels, segment, self.target.head_index, self.target.tail_index)
                out.update({f"{k}_label": v for k, v in aux.items()})
        lambdas = (self.target.cohorts.lambda_head, self.target.cohorts.lambda_tail) if self.target else (0.0, 0.0)
        loss, parts = c2al_loss(logits, labels, weights, aux, *lambdas)
        # TrainPipelineSparseDist fx-traces this forward only to find the sharded modules' inputs;
        # gradients cannot be traced, and the traced graph is never executed, so skip them there.
        training = self.training and torch.is_grad_enabled()  # validation runs under no_grad
        if (
            aux is not None
            and self.target is not None
            and self.target.cohorts.weighting == "gradsim"
            and training
            and not tracing
        ):
            loss, gate = self._gradsim_loss(parts)
            out["aux_gate"] = gate
        if self.diagnose and aux is not None and training and not tracing:
            self.last_diagnostics = self._diagnostics(sparse_tokens.detach(), dense, labels, weights, aux)
        out.update({f"logit_{k}": v.detach() for k, v in logits.items()})
        out.update({f"loss_{k}": v.detach() for k, v in parts.items()})
        out["loss_total"] = loss.detach()  # what the optimizer steps on (primary + weighted aux)
        return loss, out

    def dense_logits(self, sparse_tokens: torch.Tensor, dense: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Sparse tokens [B, F, d] and dense features [B, D] -> logits {"primary", ["head", "tail"]} [B].

        Everything after the embedding lookup (under autocast when configured): the part
        ``compile_dense`` compiles.
        """
        if self.autocast_dtype is None:
            return self.model.forward_from_tokens(torch.cat([sparse_tokens, self.model.dense_arch(dense)], 1))
        with torch.autocast(self.autocast_device, dtype=self.autocast_dtype):
            return self.model.forward_from_tokens(torch.cat([sparse_tokens, self.model.dense_arch(dense)], 1))

    def _gradsim_loss(self, parts: Dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient-similarity gating (Du et al.): L = L_p + max(0, cos(G_aux, G_p)) * L_aux.

        The gradients are taken on the shared parameters only (dense arch + over-arch), with
        ``torch.autograd.grad``: it follows only the paths to those parameters, so nothing flows
        into the sharded tables and the fused optimizer is not triggered here.
        """
        assert self.target is not None
        aux_loss = aux_objective(parts, self.target.cohorts.lambda_head, self.target.cohorts.lambda_tail)
        params = list(self.model.shared_parameters().values())
        gp = torch.autograd.grad(parts["primary"], params, retain_graph=True, allow_unused=True)
        ga = torch.autograd.grad(aux_loss, params, retain_graph=True, allow_unused=True)
        dot = sum((a * p).sum() for a, p in zip(ga, gp) if a is not None and p is not None)
        norm_p = torch.sqrt(sum((p * p).sum() for p in gp if p is not None))
        norm_a = torch.sqrt(sum((a * a).sum() for a in ga if a is not None))
        gate = (dot / (norm_p * norm_a).clamp_min(1e-20)).clamp_min(0.0).detach()
        return parts["primary"] + gate * aux_loss, gate

    def _diagnostics(self, sparse_tokens, dense, labels, weights, aux) -> dict:  # type: ignore[no-untyped-def]
        """Gradient alignment of the aux loss with the primary loss on the shared parameters, and
        the FM attention statistics, from the embeddings detached: no gradient reaches the sharded
        tables, so the fused in-backward optimizer does not run again.
        """
        from c2al_rec.analysis.attention import weight_stats
        from c2al_rec.analysis.gradients import gradient_alignment

        assert self.target is not None
        self.model.record_attention(True)
        try:
            x = torch.cat([sparse_tokens, self.model.dense_arch(dense)], dim=1)
            logits = self.model.forward_from_tokens(x)
            attention = {k: weight_stats(v.float().cpu().numpy()) for k, v in self.model.fm_attention_weights().items()}
        finally:
            self.model.record_attention(False)
        lambdas = self.target.cohorts.lambda_head, self.target.cohorts.lambda_tail
        _, parts = c2al_loss(logits, labels, weights, aux, *lambdas)
        aux_loss = aux_objective(parts, *lambdas)
        grads = gradient_alignment(parts["primary"], aux_loss, self.model.shared_parameters())
        for v in attention.values():
            v.pop("histogram")
        return {"gradients": grads, "attention": attention}
