"""client/supernode.py: a second node on one host is told which port to change."""

from __future__ import annotations

import socket

import pytest

from fedcollab.client import supernode
from fedcollab.common.errors import FederationError


def test_a_runtime_port_in_use_is_refused_naming_the_option() -> None:
    with socket.socket() as other:  # another node's runtime API on this host
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(FederationError) as err:
            supernode._check_port_free(port)
        assert f"port {port} on 127.0.0.1" in err.value.message
        assert "--port" in err.value.hint
    supernode._check_port_free(port)  # free again once the other node is gone


def test_a_supernode_that_could_not_bind_says_so() -> None:
    log = "ERROR: [Errno 98] error while attempting to bind on address: address already in use"
    err = supernode.explain_exit(1, log)
    assert "port is in use" in err.message and "--port" in err.hint
    assert "CA certificate" in supernode.explain_exit(1, "something else").hint
