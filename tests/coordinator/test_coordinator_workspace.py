"""The federation workspace: TLS material and keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedcollab.common.errors import WorkspaceError
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.coordinator.workspace import Workspace


def test_create_writes_ca_server_cert_and_keys(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="brands", partners=("acme",))
    ca = x509.load_pem_x509_certificate(ws.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(ws.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    for private in (
        ws.server_key,
        ws.root / "ca" / "ca.key",
        ws.audit_key,
        ws.node_dir("acme") / "node.key",
        ws.node_dir("acme") / "audit.key",
    ):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, private
    pub = serialization.load_ssh_public_key(ws.node_dir("acme").joinpath("node.pub").read_bytes())
    assert pub.key_size == 384  # type: ignore[union-attr]
    assert load_verifier_key(ws.audit_pub)[0] == "coordinator"
    assert Workspace.open(ws.root).federation.address == "127.0.0.1:9092"


def test_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    Workspace.create(tmp_path / "ws", name="brands")
    with pytest.raises(WorkspaceError, match="already"):
        Workspace.create(tmp_path / "ws", name="brands")
    with pytest.raises(WorkspaceError, match="invalid"):
        Workspace.create(tmp_path / "ws2", name="Bad Name")
    with pytest.raises(WorkspaceError, match="not a federation workspace"):
        Workspace.open(tmp_path / "nowhere")
