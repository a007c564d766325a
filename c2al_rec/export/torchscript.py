"""The serving module: id transforms -> primary-only model -> probability, and its TorchScript wrapper.

``ServingModel`` is what gets fx-traced (``SparseIdTransform`` stays a leaf: it has data-dependent
checks); ``ScriptableServing`` wraps the traced graph with the ``predict(Dict[str, Tensor])``
signature of the exported model and is what ``torch.jit.script`` compiles.
"""

# No `from __future__ import annotations`: TorchScript must see real annotation types here.

from typing import Dict, List

import torch
import torchrec.fx
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

LEAF_MODULES = ["SparseIdTransform"]


class ServingModel(nn.Module):
    """Primary-task probabilities of a model without its aux heads.

    Args:
        id_transform: the schema's ``SparseIdTransform`` (the reader applied it in training).
        model: a ``C2ALModel`` built without aux heads, FM in its plain-PyTorch math.
    """

    def __init__(self, id_transform: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.id_transform = id_transform
        self.model = model

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """dense [B, D], kjt (keys in schema order) -> probabilities [B]."""
        kjt = self.id_transform(kjt)
        return torch.sigmoid(self.model(dense, kjt)["primary"])


class ScriptableServing(nn.Module):
    """TorchScript entry points around the traced serving graph.

    Args:
        graph: ``torchrec.fx.symbolic_trace(ServingModel(...), leaf_modules=LEAF_MODULES)``.
        feature_names: sparse features in KJT key order.
    """

    def __init__(self, graph: nn.Module, feature_names: List[str]) -> None:
        super().__init__()
        self.serving_graph = graph
        self.feature_names: List[str] = list(feature_names)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.serving_graph(dense, kjt)

    @torch.jit.export
    def predict(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"dense": [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}`` -> probabilities [B]."""
        values: List[torch.Tensor] = []
        lengths: List[torch.Tensor] = []
        for name in self.feature_names:
            if name + ".values" not in inputs or name + ".lengths" not in inputs:
                raise ValueError("predict: missing input '{}.values' / '{}.lengths'".format(name, name))
            values.append(inputs[name + ".values"].to(torch.int64))
            lengths.append(inputs[name + ".lengths"].to(torch.int64))
        kjt = KeyedJaggedTensor(keys=self.feature_names, values=torch.cat(values), lengths=torch.cat(lengths))
        return self.forward(inputs["dense"].to(torch.float32), kjt)


def script_serving(serving: ServingModel, feature_names: List[str]) -> torch.jit.ScriptModule:
    """fx-trace with torchrec's tracer, then script with the ``predict`` method."""
    graph = torchrec.fx.symbolic_trace(serving, leaf_modules=LEAF_MODULES)
    return torch.jit.script(ScriptableServing(graph, feature_names))
