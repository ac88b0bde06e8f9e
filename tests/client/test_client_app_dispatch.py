"""client.client_app's action table (issue 17): an action with a function of its own
answers only the jobs its condition names; outside them it falls through to HANDLERS,
which does not hold it, and the request is refused (KeyError, a ProtocolError reply)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedcollab.client import secagg_node
from fedcollab.client.client_app import _ROUTES, _dispatch, _Request
from fedcollab.client.handlers import HANDLERS


def _request(
    action: str, *, task: str = "classification", masked: bool = False, encrypted: bool = False
) -> _Request:
    """Only what the conditions read is real; an action function would fail on the rest."""
    spec = SimpleNamespace(task=task, privacy=SimpleNamespace(masked=masked))
    return _Request(
        action=action, step="step", run="run", config={}, data=None, spec=spec, payload=None,
        audit=None, contract=None, shared="", trail_body={}, plan=None, encrypted=encrypted,
    )  # fmt: skip


def test_no_routed_action_is_also_a_handler() -> None:
    assert set(_ROUTES).isdisjoint(HANDLERS)


@pytest.mark.parametrize(
    "action", ["query.vertical", secagg_node.ACTION, "query.he_keygen", "query.he_decrypt"]
)
def test_a_routed_action_outside_its_jobs_is_refused(action: str) -> None:
    # A plaintext, unmasked, horizontal job: no route's condition holds.
    with pytest.raises(KeyError):
        _dispatch(_request(action))


def test_each_route_applies_to_its_own_jobs() -> None:
    assert _ROUTES["query.cosign"].applies(_request("query.cosign"))
    assert _ROUTES["query.vertical"].applies(_request("query.vertical", task="vertical"))
    assert _ROUTES[secagg_node.ACTION].applies(_request(secagg_node.ACTION, masked=True))
    assert _ROUTES["query.he_keygen"].applies(_request("query.he_keygen", encrypted=True))
    assert _ROUTES["query.he_decrypt"].applies(_request("query.he_decrypt", encrypted=True))
