"""Both vertical protocols driven in one process, for experiments and tests.

:func:`run_lr_local` runs every role of :mod:`protocols.vertical_lr` and
:func:`run_split_nn_local` every role of :mod:`protocols.split_nn`, passing
each message exactly as the relay would (masked scores, ciphertexts,
embeddings, gradients) but without serialisation or transport. A deployment
runs the same role objects in separate processes (``client.vertical``).
:func:`centralized_reference` is the non-federated optimum vertical LR is
compared with: sklearn on the joined columns.

Example
-------
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)); y = (X.sum(axis=1) > 0).astype(float)
>>> cfg = VerticalLRConfig(iterations=20, l2=0.01, encrypted=False)
>>> res = run_lr_local(LabelData(X[:, :1], y), {"p": X[:, 1:]}, cfg)
>>> res.exposes_single_party_scores, bool(res.losses[-1] < res.losses[0])
(True, True)
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedcollab.common.errors import ProtocolError
from fedcollab.privacy.masking import MaskingKey, pairwise_seeds
from fedcollab.privacy.vertical_he import LabelKeys
from fedcollab.protocols._checks import as_binary_labels, as_matrix
from fedcollab.protocols.split_nn import BottomParty, SplitNNConfig, TopModel
from fedcollab.protocols.vertical_lr import FeatureParty, LabelData, LabelHolder, VerticalLRConfig

__all__ = [
    "SplitNNResult",
    "VerticalLRResult",
    "centralized_reference",
    "run_lr_local",
    "run_split_nn_local",
]


@dataclass
class VerticalLRResult:
    """The trained roles of :func:`run_lr_local` and L's training loss per iteration."""

    label_holder: LabelHolder
    feature_parties: dict[str, FeatureParty]
    losses: list[float] = field(default_factory=list)

    @property
    def exposes_single_party_scores(self) -> bool:
        """True with one feature party: L then saw that party's partial scores unmasked."""
        return len(self.feature_parties) == 1

    def predict_proba(
        self, label_rows: np.ndarray, party_rows: Mapping[str, np.ndarray], *, step: int = 0
    ) -> np.ndarray:
        masked = {n: p.scores(party_rows[n], step=step) for n, p in self.feature_parties.items()}
        return self.label_holder.predict(masked, label_rows)


def run_lr_local(
    label: LabelData,
    parties: Mapping[str, np.ndarray],
    config: VerticalLRConfig,
    *,
    keys: LabelKeys | None = None,
) -> VerticalLRResult:
    """Run every vertical-LR role in this process, passing values as the relay would."""
    if not parties:
        raise ProtocolError("vertical training needs at least one feature party")
    run = secrets.token_hex(16)
    masking = {name: MaskingKey.generate() for name in parties}
    publics = {name: k.public_bytes() for name, k in masking.items()}
    if config.encrypted and keys is None:
        keys = LabelKeys.generate()
    public = keys.public() if config.encrypted and keys is not None else None
    holder = LabelHolder(label.X, label.y, config, parties=list(parties), keys=keys)
    fps = {
        name: FeatureParty(
            name,
            X,
            config,
            seeds=pairwise_seeds(masking[name], me=name, peers=publics, run=run),
            public=public,
        )
        for name, X in parties.items()
    }
    result = VerticalLRResult(holder, fps)
    residual: bytes | np.ndarray | None = None
    decrypted: dict[str, np.ndarray] = {}
    for _ in range(config.iterations):
        outs = {n: fp.step(residual, decrypted.get(n)) for n, fp in fps.items()}
        grads = {n: o.masked_grad for n, o in outs.items() if o.masked_grad is not None}
        lab = holder.step({n: o.masked_scores for n, o in outs.items()}, grads)
        residual, decrypted = lab.residual, lab.decrypted
        result.losses.append(lab.loss)
    for n, fp in fps.items():
        if n in decrypted:
            fp.step(None, decrypted[n])
    return result


def centralized_reference(X_all: np.ndarray, y: np.ndarray, l2: float) -> LogisticRegression:
    """sklearn's fit of the vertical-LR objective on the joined columns (the
    non-federated optimum): ``l2`` per example is sklearn's ``C = 1 / (l2 n)``."""
    x = as_matrix(X_all, name="joined features")
    c = np.inf if l2 == 0 else 1.0 / (l2 * x.shape[0])
    return LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(x, as_binary_labels(y))


@dataclass(frozen=True)
class SplitNNResult:
    """What :func:`run_split_nn_local` produced; ``test_auc`` is None without a test set."""

    losses: list[float]
    round_trips: int
    test_auc: float | None = None
    test_probabilities: np.ndarray | None = dataclasses.field(default=None, repr=False)


def run_split_nn_local(
    label_X: npt.ArrayLike,
    y: npt.ArrayLike,
    parties: Mapping[str, npt.ArrayLike],
    config: SplitNNConfig,
    *,
    test: tuple[npt.ArrayLike, npt.ArrayLike, Mapping[str, npt.ArrayLike]] | None = None,
    unsafe_noise_seed: int | None = None,
) -> SplitNNResult:
    """Train all split-NN roles in one process; ``test`` is ``(label_X, y, parties)``
    of held-out rows, embedded once per party.  The last of the ``steps + 1`` round
    trips delivers the final gradients (and collects the test embeddings)."""
    top = TopModel(y, label_X, config, feature_parties=list(parties))
    bottoms = {
        name: BottomParty(x, config, party=name, unsafe_noise_seed=unsafe_noise_seed)
        for name, x in parties.items()
    }
    for step in range(config.steps):
        grads = top.step({name: b.forward(step) for name, b in bottoms.items()})
        for name, b in bottoms.items():
            b.backward(grads[name])
    if test is None:
        return SplitNNResult(losses=top.losses, round_trips=config.steps + 1)
    test_X, test_y, test_parties = test
    labels = as_binary_labels(test_y)
    probs = top.predict(
        top.embed_own(test_X), {name: b.embed(test_parties[name]) for name, b in bottoms.items()}
    )
    auc = float(roc_auc_score(labels, probs)) if 0 < labels.sum() < labels.size else None
    return SplitNNResult(
        losses=top.losses, round_trips=config.steps + 1, test_auc=auc, test_probabilities=probs
    )
