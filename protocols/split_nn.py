"""Split neural network for vertical federated learning (pure protocol roles).

Every party, the label holder L included, maps its own feature columns to an
embedding with a bottom MLP (:class:`BottomParty`); L concatenates its own
embedding with the feature parties' ones, applies a top MLP and the binary
cross-entropy on its labels (:class:`TopModel`), and returns to each feature
party the gradient of the mean batch loss w.r.t. that party's embeddings.
Split learning: Vepakomma et al. 2018, arXiv:1812.00564.

Step ``t`` trains on :func:`batch_rows`: epochs are permutations drawn from the
public ``config.seed``, so all parties pick the same rows without a message.  A
party answers "gradients of step t" with "embeddings of step t+1" (``backward``
then ``forward``), so ``steps`` steps plus one inference cost ``steps + 1``
round trips: prefer large (full) batches to many small steps.  ``state_bytes``
/ ``from_state`` carry weights and optimiser state between processes
(``torch.save``, loaded ``weights_only=True``); features are never serialised.

Embedding DP (``noise_multiplier > 0``): each released row embedding is
clipped to L2 norm ``clip_norm`` and gets Gaussian noise of std
``noise_multiplier * clip_norm`` per coordinate, at training (``forward``) and
at inference (``embed``) alike.  The accounting, and what its epsilon does and
does not cover, is in :mod:`protocols.split_nn_dp` (re-exported here:
:func:`embedding_mechanism`, :func:`epsilon_for`, :func:`noise_for`).

Notes
-----
* *Randomness.* Noise comes from a ``torch.Generator`` seeded with 64 bits of
  OS entropy per release (as in :mod:`protocols.dp_sgd`); ``unsafe_noise_seed``
  exists for tests and reproducible experiments only.
* Adam at ``learning_rate=0.01`` (as in :mod:`protocols.local_training`):
  no per-dataset tuning on standardised tabular features.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.protocols._checks import as_binary_labels, as_matrix, check_positive_int
from fedcollab.protocols.split_nn_dp import embedding_mechanism, epsilon_for, noise_for

__all__ = [
    "BottomParty",
    "SplitNNConfig",
    "TopModel",
    "batch_rows",
    "embedding_mechanism",
    "epsilon_for",
    "noise_for",
    "releases_per_row",
]


@dataclass(frozen=True, kw_only=True)
class SplitNNConfig:
    """The job's public parameters, identical at every party."""

    hidden_sizes: tuple[int, ...] = (32,)
    embedding_dim: int = 8
    top_hidden_sizes: tuple[int, ...] = (16,)
    steps: int = 200
    batch_size: int = 4096
    learning_rate: float = 0.01
    seed: int = 0
    noise_multiplier: float = 0.0
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        for h in (*self.hidden_sizes, *self.top_hidden_sizes):
            check_positive_int(h, name="hidden size")
        for name in ("embedding_dim", "steps", "batch_size"):
            check_positive_int(getattr(self, name), name=name)
        check_positive_int(self.seed, name="seed", minimum=0)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ProtocolError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise PrivacyError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise PrivacyError(f"clip_norm must be finite and > 0, got {self.clip_norm}")


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _mlp(sizes: Sequence[int], seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        return nn.Sequential(*layers)


def _batches_per_epoch(config: SplitNNConfig, n_rows: int) -> int:
    return math.ceil(check_positive_int(n_rows, name="n_rows") / config.batch_size)


def batch_rows(config: SplitNNConfig, n_rows: int, step: int) -> np.ndarray:
    """Sorted row indices of training step ``step`` (public: every party agrees)."""
    per_epoch = _batches_per_epoch(config, n_rows)
    epoch, index = divmod(check_positive_int(step, name="step", minimum=0), per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(n_rows)
    return np.sort(order[index * config.batch_size : (index + 1) * config.batch_size])


def releases_per_row(config: SplitNNConfig, n_rows: int) -> int:
    """The most training steps any one row is in (its training releases)."""
    return math.ceil(config.steps / _batches_per_epoch(config, n_rows))


def _tensor(x: npt.ArrayLike, *, name: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(as_matrix(x, name=name), dtype=np.float32))


def _pack(config: SplitNNConfig, **items: Any) -> bytes:
    buf = io.BytesIO()
    torch.save({"config": repr(config), **items}, buf)
    return buf.getvalue()


def _unpack(state: bytes, config: SplitNNConfig, role: str) -> dict[str, Any]:
    try:
        data = torch.load(io.BytesIO(state), weights_only=True)
    except Exception as exc:  # torch raises many types on foreign bytes
        raise ProtocolError(f"not a {role} state ({exc})") from exc
    if not isinstance(data, dict) or data.get("role") != role:
        raise ProtocolError(f"not a {role} state")
    if data.get("config") != repr(config):
        raise ProtocolError(
            f"the {role} state was written for another configuration",
            hint="resume with the SplitNNConfig the job started with",
        )
    return data


class BottomParty:
    """One party's bottom model: its feature rows -> embeddings of ``embedding_dim``."""

    def __init__(
        self,
        features: npt.ArrayLike,
        config: SplitNNConfig,
        *,
        party: str,
        embedding_dp: bool = True,
        unsafe_noise_seed: int | None = None,
    ) -> None:
        self.config = config
        self.party = party
        self._x = _tensor(features, name=f"{party} features")
        self._dp = embedding_dp and config.noise_multiplier > 0
        self._noise_seed = unsafe_noise_seed
        sizes = [self._x.shape[1], *config.hidden_sizes, config.embedding_dim]
        self.model = _mlp(sizes, _seed(config.seed, "bottom", party))
        self._opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.next_step = 0  # the step forward() may release next
        self.pending: int | None = None  # the step whose gradient backward() awaits
        self.embed_calls = 0

    @property
    def n_rows(self) -> int:
        return int(self._x.shape[0])

    def _embeddings(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        if self._dp:  # differentiable clipping: training sees what is released
            norms = out.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out = out * (self.config.clip_norm / norms).clamp(max=1.0)
        return out

    def _release(self, clean: torch.Tensor, tag: str, index: int) -> np.ndarray:
        if self._dp:
            if self._noise_seed is None:
                seed = secrets.randbits(63)
            else:
                seed = _seed(self._noise_seed, self.party, tag, index)
            gen = torch.Generator().manual_seed(seed)
            std = self.config.noise_multiplier * self.config.clip_norm
            clean = clean + std * torch.randn(clean.shape, generator=gen)
        return clean.detach().numpy().astype(np.float64)

    def forward(self, step: int) -> np.ndarray:
        """Embeddings of the rows of ``step`` (noised under embedding DP), in row order.

        Steps go in order, each released once: a retry must resend the first
        answer, since a fresh noise draw would be an uncounted release.
        """
        if self.pending is not None or step != self.next_step or step >= self.config.steps:
            raise ProtocolError(
                f"{self.party}: cannot release step {step} (next {self.next_step}, "
                f"awaiting gradient of {self.pending}, job has {self.config.steps} steps)",
                hint="resend the earlier embeddings; do not recompute a released step",
            )
        rows = batch_rows(self.config, self.n_rows, step)
        with torch.no_grad():
            released = self._release(self._embeddings(self._x[rows]), "train", step)
        self.pending = step
        return released

    def backward(self, grad_embeddings: npt.ArrayLike) -> None:
        """Apply L's gradient for the pending step (recomputes the forward pass)."""
        if self.pending is None:
            raise ProtocolError(f"{self.party}: a gradient arrived but no step is pending")
        rows = batch_rows(self.config, self.n_rows, self.pending)
        grad = _tensor(grad_embeddings, name=f"{self.party} embedding gradient")
        if tuple(grad.shape) != (rows.size, self.config.embedding_dim):
            raise ProtocolError(
                f"{self.party}: gradient of shape {tuple(grad.shape)}, "
                f"expected {(rows.size, self.config.embedding_dim)}"
            )
        self._opt.zero_grad()
        torch.autograd.backward(self._embeddings(self._x[rows]), grad)
        self._opt.step()
        self.pending, self.next_step = None, self.next_step + 1

    def embed(self, rows: npt.ArrayLike) -> np.ndarray:
        """Embeddings of feature rows for inference, noised like training releases
        under embedding DP: each call is one more release of every row in it."""
        self.embed_calls += 1
        with torch.no_grad():
            clean = self._embeddings(_tensor(rows, name=f"{self.party} rows"))
        return self._release(clean, "embed", self.embed_calls)

    def local_embedding(self, rows: npt.ArrayLike) -> np.ndarray:
        """Noise-free embeddings for the party's own analysis: never send them."""
        with torch.no_grad():
            return (
                self._embeddings(_tensor(rows, name=f"{self.party} rows"))
                .numpy()
                .astype(np.float64)
            )

    def state_bytes(self) -> bytes:
        return _pack(
            self.config,
            role="bottom",
            party=self.party,
            dp=self._dp,
            model=self.model.state_dict(),
            optimizer=self._opt.state_dict(),
            counters=[self.next_step, -1 if self.pending is None else self.pending],
            embed_calls=self.embed_calls,
        )

    @classmethod
    def from_state(
        cls,
        state: bytes,
        features: npt.ArrayLike,
        config: SplitNNConfig,
        *,
        unsafe_noise_seed: int | None = None,
    ) -> BottomParty:
        data = _unpack(state, config, "bottom")
        party = cls(
            features,
            config,
            party=data["party"],
            embedding_dp=data["dp"],
            unsafe_noise_seed=unsafe_noise_seed,
        )
        party.model.load_state_dict(data["model"])
        party._opt.load_state_dict(data["optimizer"])
        party.next_step, pending = data["counters"]
        party.pending = None if pending < 0 else pending
        party.embed_calls = data["embed_calls"]
        return party


class TopModel:
    """L's side: its own bottom model, the top MLP and the labels."""

    def __init__(
        self,
        labels: npt.ArrayLike,
        own_features: npt.ArrayLike,
        config: SplitNNConfig,
        *,
        feature_parties: Sequence[str],
        own_party: str = "label",
    ) -> None:
        self.config = config
        self.own = BottomParty(own_features, config, party=own_party, embedding_dp=False)
        self._y = torch.from_numpy(as_binary_labels(labels).astype(np.float32))
        if self._y.shape[0] != self.own.n_rows:
            raise ProtocolError(f"{self.own.n_rows} feature rows but {self._y.shape[0]} labels")
        self.parties = sorted(feature_parties)
        if len(set(self.parties)) != len(self.parties) or own_party in self.parties:
            raise ProtocolError(f"party names must be distinct, got {feature_parties!r}")
        width = config.embedding_dim * (1 + len(self.parties))
        self.model = _mlp([width, *config.top_hidden_sizes, 1], _seed(config.seed, "top"))
        self._opt = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.losses: list[float] = []

    def _inputs(self, embeddings: Mapping[str, npt.ArrayLike], rows: int) -> list[torch.Tensor]:
        if set(embeddings) != set(self.parties):
            raise ProtocolError(f"embeddings from {sorted(embeddings)}, expected {self.parties}")
        out = []
        for party in self.parties:
            e = _tensor(embeddings[party], name=f"{party} embeddings")
            if tuple(e.shape) != (rows, self.config.embedding_dim):
                raise ProtocolError(
                    f"{party}: embeddings of shape {tuple(e.shape)}, "
                    f"expected {(rows, self.config.embedding_dim)}"
                )
            out.append(e.requires_grad_(True))
        return out

    def step(self, embeddings: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
        """One training step on the next batch; each feature party's gradient."""
        t = self.own.next_step
        if t >= self.config.steps:
            raise ProtocolError(f"the job has {self.config.steps} steps; all are done")
        rows = batch_rows(self.config, self.own.n_rows, t)
        theirs = self._inputs(embeddings, rows.size)
        own_opt = self.own._opt
        own_opt.zero_grad()
        self._opt.zero_grad()
        logits = self.model(torch.cat([self.own._embeddings(self.own._x[rows]), *theirs], 1))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), self._y[rows])
        torch.autograd.backward(loss)
        self._opt.step()
        own_opt.step()
        self.own.next_step += 1
        self.losses.append(float(loss.detach()))
        return {
            p: e.grad.numpy().astype(np.float64)  # type: ignore[union-attr]
            for p, e in zip(self.parties, theirs, strict=True)
        }

    def embed_own(self, own_rows: npt.ArrayLike) -> np.ndarray:
        """L's own embeddings of its feature rows (never noised: they stay at L)."""
        return self.own.local_embedding(own_rows)

    def predict(
        self, own_rows_embedding: npt.ArrayLike, embeddings: Mapping[str, npt.ArrayLike]
    ) -> np.ndarray:
        """Probability of the positive class from all parties' embeddings of the rows."""
        own = _tensor(own_rows_embedding, name="own embeddings")
        theirs = self._inputs(embeddings, own.shape[0])
        with torch.no_grad():
            logits = self.model(torch.cat([own, *theirs], 1)).reshape(-1)
        return torch.sigmoid(logits.double()).numpy()

    def state_bytes(self) -> bytes:
        return _pack(
            self.config,
            role="top",
            own=self.own.state_bytes(),
            own_party=self.own.party,
            parties=list(self.parties),
            model=self.model.state_dict(),
            optimizer=self._opt.state_dict(),
            losses=list(self.losses),
        )

    @classmethod
    def from_state(
        cls,
        state: bytes,
        labels: npt.ArrayLike,
        own_features: npt.ArrayLike,
        config: SplitNNConfig,
    ) -> TopModel:
        data = _unpack(state, config, "top")
        parties, own_party = data["parties"], data["own_party"]
        top = cls(labels, own_features, config, feature_parties=parties, own_party=own_party)
        top.own = BottomParty.from_state(data["own"], own_features, config)
        top.model.load_state_dict(data["model"])
        top._opt.load_state_dict(data["optimizer"])
        top.losses = list(data["losses"])
        return top
