"""C2ALModel: sparse arch + dense arch -> tokens -> DHEN -> h -> primary head (+ C2AL aux heads).

Tokens: X = [sparse tokens in table order (``sparse_arch.feature_names``), dense token], so
X is [B, n, d] with n = number of tables + 1. Data without dense features (all-categorical CTR
sets) has no dense token: ``dense`` is [B, 0] and n = number of tables. h = flatten(final X),
optionally through ``repr_mlp``. The primary head and the two auxiliary heads g_head, g_tail
read the same h; with ``model.aux_projection`` = p > 0 the aux heads read one shared linear
projection of h, [B, p], instead (a low-rank first layer: wide aux heads then cost little).
"""

import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from c2al_rec.config import Config, ModelConfig

from .dhen import DHEN
from .interactions import FMInteraction
from .mlp import mlp, mlps_on_shared_input

AUX_HEADS = ("head", "tail")


def tables_from_features(
    features: Sequence, embedding_dim: int = ModelConfig.embedding_dim
) -> List[EmbeddingBagConfig]:
    """One ``EmbeddingBagConfig`` per sparse feature: name ``t_<feature>``, feature_names [feature].

    Args:
        features: schema sparse features (objects with ``name``, ``num_embeddings``, ``pooling``
            "sum" or "mean").
        embedding_dim: d, shared by all tables (``model.embedding_dim``).

    Example::

        tables = tables_from_features(schema.sparse, cfg.model.embedding_dim)
    """
    poolings = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
    tables = []
    for f in features:
        pooling = getattr(f, "pooling", "sum")
        if pooling not in poolings:
            raise ValueError(f"sparse feature '{f.name}': pooling must be 'sum' or 'mean', got {pooling!r}")
        tables.append(
            EmbeddingBagConfig(
                name=f"t_{f.name}",
                embedding_dim=embedding_dim,
                num_embeddings=f.num_embeddings,
                feature_names=[f.name],
                pooling=poolings[pooling],
            )
        )
    return tables


class SparseArch(nn.Module):
    """EmbeddingBagCollection -> sparse tokens [B, F, d] in table order.

    Args:
        tables: one table per feature, all of dim d (the order fixes the token order).
        device: parameter device (``meta`` for DMP).
    """

    def __init__(self, tables: List[EmbeddingBagConfig], device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)
        self.feature_names: List[str] = [name for t in tables for name in t.feature_names]
        self.num_features = len(self.feature_names)
        self.dim = tables[0].embedding_dim

    def forward(self, sparse: KeyedJaggedTensor) -> Tensor:
        """KJT with the tables' feature keys -> [B, F, d], tokens in ``feature_names`` order.

        The features are picked by name: a sharded EBC returns its keys in sharding-plan order
        (grouped by sharding type and rank), so ``values()`` alone would give a token order that
        changes with the plan and the world size.
        """
        embeddings = self.ebc(sparse).to_dict()
        tokens = [embeddings[name] for name in self.feature_names]
        return torch.stack(tokens, dim=1)


class DenseArch(nn.Module):
    """MLP of the dense features to one token: [B, D] -> [B, 1, d]; no token when D = 0: [B, 0] -> [B, 0, d].

    Args:
        in_features: D (0: the data has no dense features; the arch has no parameters).
        hidden: hidden layer widths of the MLP.
        dim: token width d.
        device: parameter device.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], dim: int, device: Optional[torch.device] = None):
        super().__init__()
        self.in_features = in_features
        self.dim = dim
        self.num_tokens = 1 if in_features > 0 else 0
        # an MLP over zero inputs would be a learned constant token: with no dense features there is no token
        self.mlp = mlp(in_features, hidden, dim, device=device) if in_features > 0 else nn.Identity()

    def forward(self, dense: Tensor) -> Tensor:
        if self.in_features == 0:
            # [B, 0] -> [B, 0, d]: concatenated to the sparse tokens it adds nothing
            return dense.unsqueeze(-1).expand(-1, -1, self.dim)
        return self.mlp(dense).unsqueeze(1)


class OverArch(nn.Module):
    """DHEN over tokens, then h = flatten(final X) (through ``repr_mlp`` when configured)."""

    def __init__(self, num_tokens: int, cfg: ModelConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.dhen = DHEN(num_tokens, cfg, device)
        flat = self.dhen.num_out_tokens * cfg.embedding_dim
        self.repr_mlp = mlp(flat, cfg.repr_mlp, None, device=device)
        self.repr_dim = cfg.repr_mlp[-1] if cfg.repr_mlp else flat

    def forward(self, x: Tensor) -> Tensor:
        """X [B, n, d] -> h [B, repr_dim]."""
        return self.repr_mlp(self.dhen(x).flatten(1))


class C2ALModel(nn.Module):
    """The C2AL recommender: one primary CTR head, plus g_head and g_tail when ``aux_heads``.

    Args:
        tables: one ``EmbeddingBagConfig`` per sparse feature, all of dim ``cfg.embedding_dim``
            (see :func:`tables_from_features`).
        dense_in_features: D, dense features per row (0: no dense token, n = number of tables).
        cfg: model config.
        aux_heads: build the two C2AL auxiliary heads (training model); False is the baseline.
        device: parameter device; ``torch.device("meta")`` defers allocation to DMP.

    Inputs: ``dense`` [B, D] float ([B, 0] when D = 0), ``sparse`` KJT keyed by the tables' feature names.
    Output: ``{"primary": [B]}`` logits, plus ``"head"``, ``"tail"`` [B] with ``aux_heads``.

    Example::

        model = C2ALModel(tables_from_features(schema.sparse, 16), len(schema.dense), ModelConfig(), True)
        logits = model(batch.dense_features, batch.sparse_features)   # {"primary", "head", "tail"}
    """

    def __init__(
        self,
        tables: List[EmbeddingBagConfig],
        dense_in_features: int,
        cfg: ModelConfig,
        aux_heads: bool,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if not tables:
            raise ValueError("C2ALModel needs at least one sparse feature table")
        dims = {t.name: t.embedding_dim for t in tables if t.embedding_dim != cfg.embedding_dim}
        if dims:
            raise ValueError(f"tables {dims} differ from model.embedding_dim = {cfg.embedding_dim}")
        if dense_in_features < 0:
            raise ValueError(f"C2ALModel needs dense_in_features >= 0, got {dense_in_features}")
        self.sparse_arch = SparseArch(tables, device)
        self.dense_arch = DenseArch(dense_in_features, cfg.dense_arch, cfg.embedding_dim, device)
        self.num_tokens = self.sparse_arch.num_features + self.dense_arch.num_tokens
        self.over_arch = OverArch(self.num_tokens, cfg, device)
        self.primary_head = mlp(self.over_arch.repr_dim, cfg.primary_head, 1, device=device)
        self.has_aux_heads = aux_heads
        self.aux_projection = cfg.aux_projection if aux_heads else 0
        if aux_heads:
            aux_in = self.aux_projection or self.over_arch.repr_dim
            heads = {name: mlp(aux_in, cfg.aux_head, 1, device=device) for name in AUX_HEADS}
            if self.aux_projection:
                # inside aux_heads, so export and the serving checkpoint drop it with the heads
                heads["projection"] = mlp(self.over_arch.repr_dim, [], self.aux_projection, device=device)
            self.aux_heads = nn.ModuleDict(heads)

    def forward(self, dense: Tensor, sparse: KeyedJaggedTensor) -> Dict[str, Tensor]:
        """dense [B, D], sparse KJT -> logits {"primary": [B]} (+ "head", "tail")."""
        x = torch.cat([self.sparse_arch(sparse), self.dense_arch(dense)], dim=1)  # [B, n, d] (no dense token if D = 0)
        return self.forward_from_tokens(x)

    def forward_from_tokens(self, x: Tensor) -> Dict[str, Tensor]:
        """Tokens X [B, n, d] (sparse tokens, then the dense token if any) -> logits, as ``forward``.

        Lets diagnostics re-run the dense part on detached embeddings without a second lookup.
        """
        h = self.over_arch(x)
        if not self.has_aux_heads:
            return {"primary": self.primary_head(h).squeeze(-1)}
        # heads that read the same input run their first layers as one GEMM (same parameters)
        aux = [self.aux_heads[name] for name in AUX_HEADS]
        if self.aux_projection:
            primary, z = mlps_on_shared_input(h, [self.primary_head, self.aux_heads["projection"]])  # z [B, p]
            logits = [primary, *mlps_on_shared_input(z, aux)]
        else:
            logits = mlps_on_shared_input(h, [self.primary_head, *aux])
        return {name: z.squeeze(-1) for name, z in zip(("primary", *AUX_HEADS), logits)}

    def fm_modules(self) -> Dict[str, FMInteraction]:
        """The FM interaction modules by qualified name (e.g. ``over_arch.dhen.layers.0.interactions.0``)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, FMInteraction)}

    def shared_parameters(self) -> Dict[str, nn.Parameter]:
        """Named parameters of the shared representation h: dense_arch and over_arch."""
        out = {f"dense_arch.{n}": p for n, p in self.dense_arch.named_parameters()}
        out.update({f"over_arch.{n}": p for n, p in self.over_arch.named_parameters()})
        return out

    def record_attention(self, enabled: bool = True) -> None:
        """Keep (or stop keeping) each FM module's last Y, detached; off by default."""
        for m in self.fm_modules().values():
            m.record = enabled
            if not enabled:
                m.last_attention = None

    def fm_attention_weights(self) -> Dict[str, Tensor]:
        """Last Y per FM module ([B, n, k] attentive or [n, k] static), after ``record_attention(True)``."""
        return {name: m.last_attention for name, m in self.fm_modules().items() if m.last_attention is not None}

    def use_reference_fm(self, enabled: bool = True) -> None:
        """Switch every FM module to plain-PyTorch math (export: no custom op in the graph)."""
        for m in self.fm_modules().values():
            m.use_reference = enabled

    def without_aux_heads(self) -> "C2ALModel":
        """A primary-only model sharing this model's parameters (the serving / baseline form)."""
        clone = copy.copy(self)
        clone._modules = {k: v for k, v in self._modules.items() if k != "aux_heads"}
        clone.has_aux_heads = False
        clone.aux_projection = 0
        return clone


def build_run_model(cfg: Config, schema: Any, device: torch.device) -> C2ALModel:
    """The model a run with config ``cfg`` trains on data with ``schema``: one table per sparse feature,
    the dense arch over its dense columns, aux heads when C2AL is on.

    The trainer builds it on the meta device; loading a run builds it on CPU, so both hold the same
    parameters under the same names.

    Args:
        cfg: the run config (``model`` and ``cohorts.enabled`` are read).
        schema: the dataset schema (``sparse`` features with ``num_embeddings``, ``dense`` columns).
        device: parameter device (``meta`` for DMP).
    """
    return C2ALModel(
        tables_from_features(schema.sparse, cfg.model.embedding_dim),
        dense_in_features=len(schema.dense),
        cfg=cfg.model,
        aux_heads=cfg.cohorts.enabled,
        device=device,
    )
