"""client.actions' action table (issue 17): an action with a function of its own
answers only the jobs its condition names; outside them it falls through to HANDLERS,
which does not hold it, and the request is refused (KeyError, a ProtocolError reply)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedcollab.client import secagg_node
from fedcollab.client.actions import ROUTES, Request, dispatch
from fedcollab.client.handlers import HANDLERS


def _request(
    action: str, *, task: str = "classification", masked: bool = False, encrypted: bool = False
) -> Request:
    """Only what the conditions read is real; an action function would fail on the rest."""
    spec = SimpleNamespace(task=task, privacy=SimpleNamespace(masked=masked))
    return Request(
        action=action, step="step", run="run", config={}, data=None, spec=spec, payload=None,
        audit=None, contract=None, shared="", trail_body={}, plan=None, encrypted=encrypted,
    )  # fmt: skip


def test_no_routed_action_is_also_a_handler() -> None:
    assert set(ROUTES).isdisjoint(HANDLERS)


@pytest.mark.parametrize(
    "action", ["query.vertical", secagg_node.ACTION, "query.he_keygen", "query.he_decrypt"]
)
def test_a_routed_action_outside_its_jobs_is_refused(action: str) -> None:
    # A plaintext, unmasked, horizontal job: no route's condition holds.
    with pytest.raises(KeyError):
        dispatch(_request(action))


def test_each_route_applies_to_its_own_jobs() -> None:
    assert ROUTES["query.cosign"].applies(_request("query.cosign"))
    assert ROUTES["query.vertical"].applies(_request("query.vertical", task="vertical"))
    assert ROUTES[secagg_node.ACTION].applies(_request(secagg_node.ACTION, masked=True))
    assert ROUTES["query.he_keygen"].applies(_request("query.he_keygen", encrypted=True))
    assert ROUTES["query.he_decrypt"].applies(_request("query.he_decrypt", encrypted=True))
