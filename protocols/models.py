"""Model zoo for horizontal training, and weights <-> flat vector conversion.

Two binary classifiers, both mapping ``(n, n_features)`` float32 features to
``(n, 1)`` logits:

* ``"logreg"`` -- logistic regression (one linear layer);
* ``"mlp"`` -- a ReLU multilayer perceptron with ``hidden_sizes``.

Only layers Opacus supports (``Linear``, ``ReLU``) are used, so the same models
train under DP-SGD.  Weights travel as a list of float64 arrays in
``state_dict`` order; :func:`flatten` / :func:`unflatten` convert to and from
the flat vector that FedAvg (McMahan et al. 2017, arXiv:1602.05629) sums.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import check_positive_int
from fedcollab.protocols.params import flatten, shapes_of, unflatten

__all__ = [
    "ModelKind",
    "build_model",
    "flatten",
    "get_weights",
    "set_weights",
    "shapes_of",
    "unflatten",
]

ModelKind = Literal["logreg", "mlp"]


def build_model(
    kind: ModelKind,
    *,
    n_features: int,
    hidden_sizes: tuple[int, ...] = (32, 16),
    seed: int,
) -> nn.Module:
    """A freshly initialised model; the same ``seed`` gives the same weights.

    The global torch RNG is left untouched.  ``hidden_sizes`` is ignored for
    ``"logreg"``.
    """
    check_positive_int(n_features, name="n_features")
    if kind == "logreg":
        sizes: list[int] = [n_features, 1]
    elif kind == "mlp":
        for h in hidden_sizes:
            check_positive_int(h, name="hidden size")
        sizes = [n_features, *hidden_sizes, 1]
    else:
        raise ProtocolError(f"unknown model kind {kind!r}; expected 'logreg' or 'mlp'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        return nn.Sequential(*layers)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's weights as float64 copies, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().astype(np.float64) for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[npt.ArrayLike]) -> None:
    """Load ``weights`` (as from :func:`get_weights`) into ``model`` in place.

    ProtocolError if the number of arrays, a shape, or a value (non-finite)
    does not fit.
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise ProtocolError(f"expected {len(state)} weight arrays, got {len(weights)}")
    new_state: dict[str, torch.Tensor] = {}
    for (name, current), w in zip(state.items(), weights, strict=True):
        arr = np.asarray(w, dtype=np.float64)
        if arr.shape != tuple(current.shape):
            raise ProtocolError(
                f"weight {name!r}: expected shape {tuple(current.shape)}, got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ProtocolError(f"weight {name!r}: contains NaN or infinite values")
        new_state[name] = torch.as_tensor(arr, dtype=current.dtype)
    model.load_state_dict(new_state, strict=True)
