"""What every vertical model step at a party starts from: its rows for the job.

Shared by :mod:`client.vertical_training` (logistic regression) and
:mod:`client.vertical_split` (split NN): the party's feature matrix on its
aligned rows (:func:`protocols.vertical_data.party_matrix`), the label holder's
labels in the same order, and the iteration a request names.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from fedcollab.common.errors import ProtocolError
from fedcollab.common.messages.vertical import ModelStepRequest
from fedcollab.protocols.vertical_data import PartyMatrix, aligned_split, party_matrix

if TYPE_CHECKING:
    from fedcollab.client.vertical import PartyContext

__all__ = ["PartyRows", "iteration"]


class PartyRows:
    """This party's matrices for the job, rebuilt per message (cached within it)."""

    def __init__(self, p: PartyContext) -> None:
        self.p = p

    @cached_property
    def matrix(self) -> PartyMatrix:
        ev = self.p.spec.evaluation
        return party_matrix(
            self.p.data.dataset,
            self.p.store.get_array("aligned"),
            test_fraction=ev.test_fraction,
            split_seed=ev.split_seed,
        )

    @cached_property
    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The label holder's training and test labels, in aligned order (float64)."""
        ds, ev = self.p.data.dataset, self.p.spec.evaluation
        if ds.labels is None:
            raise ProtocolError("the label holder's data has no label column")
        aligned = self.p.store.get_array("aligned")
        train, test = aligned_split(
            ds, aligned, test_fraction=ev.test_fraction, split_seed=ev.split_seed
        )
        labels = ds.labels.astype(np.float64)
        return labels[aligned[train]], labels[aligned[test]]


def iteration(p: PartyContext) -> int:
    """The iteration a step request names, checked against the job's length."""
    request = p.request
    it = request.iteration if isinstance(request, ModelStepRequest) else None
    if it is None or not 0 <= it < p.spec.vertical.iterations:
        raise ProtocolError(f"vertical step without a valid iteration ({it!r})")
    return it
