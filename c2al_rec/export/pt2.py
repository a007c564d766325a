"""``model.pt2``: the serving graph captured with ``torch.export`` and compiled ahead of time by AOTInductor.

Capture choice: the KJT is flattened into per-feature ``values`` / ``lengths`` in the compiled
signature (``FlatServing``), and each feature's ``nn.EmbeddingBag`` of the (unsharded)
``EmbeddingBagCollection`` is called directly. Tried the other way too, non-strict export of the
model with a KJT built inside the graph (torchrec's KJT pytree flattening, what ``torchrec.ir``
builds on): it captures, but splitting the KJT per key reads every key's length with ``.item()``
and adds a runtime assertion per key (torchrec warns "non-strict torch.export KJT to_dict, which
is extremely slow"), and it concatenates the ids that ``predict`` already receives per feature
only to split them again. The flat signature has no data-dependent shapes (batch size and each
feature's id count are plain dynamic dimensions), holds aten ops only (the package loads without
torchrec or fbgemm), and is ``predict``'s own input layout.

The id checks of ``SparseIdTransform`` cannot be captured (``int(values.min())`` is a
data-dependent guard: ``GuardOnDataDependentSymNode``), so they run on the host before the
compiled call (``c2al_rec.serve.pt2_model``); the graph keeps only the hashing
(``remainder``) of ``out_of_range = "hash"`` features. The compiled program therefore never sees
an id outside its table.

Quantized tables (int8 / fp16) are refused. They run in FBGEMM's table-batched embedding ops:
with torch 2.13 / fbgemm-gpu-cpu 1.8, a non-strict ``torch.export`` of the int8 model captures them,
but AOTInductor fails on ``fbgemm::bounds_check_indices`` (it rewrites its inputs in place and
has no functional form: "input_tensor must be a FunctionalTensor"); and a package that called
fbgemm ops would need fbgemm's library in every host, which the fp32 package does not.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

import torch
from torch import Tensor, nn

from c2al_rec.data.schema import SparseFeature

if TYPE_CHECKING:
    from c2al_rec.runs.load import TrainedRun

PT2_SIGNATURE = (
    "compiled(dense: float32 [B, D], values: [int64 [N_f] per sparse feature], lengths: [int64 [B] per sparse "
    "feature]) -> float32 [B]; ids checked on the host first (c2al_rec.serve.pt2_model.Pt2Program.predict)"
)


class Pt2ExportError(ValueError):
    """``--pt2`` cannot be honoured (quantized tables, no C++ compiler); nothing was written."""


class FlatServing(nn.Module):
    """Primary-task probabilities from ``dense`` and per-feature ``values`` / ``lengths``.

    Args:
        model: a ``C2ALModel`` without aux heads, FM in its plain-PyTorch math, fp32 tables.
        features: the schema's sparse features (the order of ``values`` / ``lengths``).

    ``forward(dense [B, D], values: List[int64 [N_f]], lengths: List[int64 [B]]) -> [B]``; ids
    must already be checked (``>= 0``; ``< num_embeddings`` unless the feature hashes), and a
    single-hot feature must have one id per row (N_f = B, lengths all 1; its lengths are not read).
    """

    def __init__(self, model: nn.Module, features: Sequence[SparseFeature]) -> None:
        super().__init__()
        ebc = model.sparse_arch.ebc
        bag_of_feature: Dict[str, nn.Module] = {}
        for config, bag in zip(ebc.embedding_bag_configs(), ebc.embedding_bags.values()):
            for name in config.feature_names:
                bag_of_feature[name] = bag
        names = [f.name for f in features]
        self.bags = nn.ModuleList([bag_of_feature[n] for n in names])
        # 0: ids used as given; n > 0: ids folded into the table (id mod n), as SparseIdTransform does
        self.hash_sizes: List[int] = [f.num_embeddings if f.out_of_range == "hash" else 0 for f in features]
        self.multi_hot: List[bool] = [f.multi_hot for f in features]
        # tokens in the sparse arch's order (table order), whatever the schema's
        self.token_order: List[int] = [names.index(n) for n in model.sparse_arch.feature_names]
        self.model = model

    def forward(self, dense: Tensor, values: List[Tensor], lengths: List[Tensor]) -> Tensor:
        pooled: List[Tensor] = []
        for bag, hash_size, multi_hot, ids, lens in zip(self.bags, self.hash_sizes, self.multi_hot, values, lengths):
            if hash_size:
                ids = torch.remainder(ids, hash_size)
            # a single-hot feature has one id per row (checked on the host): its pooled row is that id's row
            pooled.append((pool_rows(bag.weight, ids, lens, bag.mode) if multi_hot else bag.weight[ids]).float())
        sparse_tokens = torch.stack([pooled[i] for i in self.token_order], dim=1)  # [B, F, d]
        # as C2ALModel.forward: sparse tokens, then the dense token (none when D = 0)
        x = torch.cat([sparse_tokens, self.model.dense_arch(dense)], dim=1)
        return torch.sigmoid(self.model.forward_from_tokens(x)["primary"])


def compile_serving_pt2(loaded: "TrainedRun", path: Path) -> float:
    """Compile the primary-only fp32 serving graph of a loaded run into ``path``; returns the seconds taken."""
    model = copy.deepcopy(loaded.model).without_aux_heads()
    model.use_reference_fm(True)  # plain-PyTorch FM math: no custom op in the graph
    flat = FlatServing(pretranspose_linears(model.eval()), loaded.schema.sparse).eval()
    return compile_pt2(flat, len(loaded.schema.dense), path)


class PretransposedLinear(nn.Module):
    """``nn.Linear`` with its weight stored transposed, [in, out] contiguous: ``x @ weight_t + bias``.

    ``F.linear`` hands MKL's GEMM the transposed view of [out, in]; a contiguous right operand runs
    ~5x faster at batch 1 and ~1.2x at batch 64 (TorchScript's ``freeze`` folds the same transpose).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def pretranspose_linears(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` in place by a ``PretransposedLinear``; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PretransposedLinear(child))
    return model


def pool_rows(weight: Tensor, ids: Tensor, lengths: Tensor, mode: str) -> Tensor:
    """``nn.EmbeddingBag`` (``sum`` / ``mean``) as a gather and an ``index_add``, which Inductor compiles
    into its own loops, where ``embedding_bag`` stays a library call per feature (~30 us each at batch 1).

    Args:
        weight: the table [V, d]; ids: int64 [N] in [0, V); lengths: int64 [B], summing to N.

    Returns:
        [B, d]: per row, the sum (``mean``: the mean, 0 for no ids) of its ids' rows.
    """
    rows = torch.searchsorted(torch.cumsum(lengths, 0), torch.arange(ids.shape[0]), right=True)  # row of each id
    pooled = weight.new_zeros(lengths.shape[0], weight.shape[1]).index_add(0, rows, weight[ids])
    if mode == "mean":
        pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(weight.dtype)
    return pooled


def flat_args(inputs: Dict[str, Tensor], names: Sequence[str]) -> tuple[Tensor, List[Tensor], List[Tensor]]:
    """``(dense, values, lengths)`` of a ``predict`` input dict, features in ``names`` order."""
    return (
        inputs["dense"],
        [inputs[f"{n}.values"] for n in names],
        [inputs[f"{n}.lengths"] for n in names],
    )


def check_pt2_request(quantize: str) -> None:
    """What ``--pt2`` needs, checked before the costly part: fp32 tables and a C++ compiler.

    Raises:
        Pt2ExportError: one line naming what is missing.
    """
    if quantize != "none":
        raise Pt2ExportError(
            f"--pt2 with --quantize {quantize}: quantized tables run in FBGEMM's table-batched embedding op, which "
            f"AOTInductor cannot compile (fbgemm::bounds_check_indices rewrites its inputs in place); export --pt2 "
            f"with --quantize none, or drop --pt2"
        )
    find_cxx_compiler()


def find_cxx_compiler() -> str:
    """The C++ compiler AOTInductor will use (``$CXX``, else ``g++``).

    Raises:
        Pt2ExportError: none found; the message names what is missing.
    """
    from torch._inductor import config, exc
    from torch._inductor.cpp_builder import cpp_compiler_search

    search = tuple(c for c in config.cpp.cxx if c)
    try:
        return cpp_compiler_search(search)
    except exc.InvalidCxxCompiler:
        raise Pt2ExportError(
            f"--pt2: AOTInductor compiles model.pt2 with a C++ compiler and none was found (tried {', '.join(search)}; "
            f"set CXX or install g++, e.g. apt-get install g++); nothing written"
        ) from None


def compile_pt2(flat: FlatServing, dense_dim: int, path: Path) -> float:
    """``torch.export`` ``flat`` with a dynamic batch size and dynamic id counts, AOTInductor-compile it
    for CPU into the package ``path``; returns the seconds taken.

    Args:
        flat: the serving graph.
        dense_dim: D of ``dense`` [B, D] (static).
        path: the ``.pt2`` to write.
    """
    find_cxx_compiler()
    t0 = time.perf_counter()
    # trace inputs: 3 rows, multi-hot features 2 ids a row (id 0 is in every table); sizes other than
    # 0 and 1, which export would specialise on, and different from each other, which it could unify
    rows, per_row = 3, 2
    multi = flat.multi_hot
    args = (
        torch.zeros(rows, dense_dim),
        [torch.zeros(rows * (per_row if m else 1), dtype=torch.int64) for m in multi],
        [torch.full((rows,), per_row if m else 1, dtype=torch.int64) for m in multi],
    )
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = (
        {0: batch},
        [{0: torch.export.Dim(f"ids_{i}", min=0) if m else batch} for i, m in enumerate(multi)],
        [{0: batch} for _ in multi],
    )
    with torch.no_grad():
        program = torch.export.export(flat, args, dynamic_shapes=dynamic_shapes, strict=False)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return time.perf_counter() - t0
