"""A partner node's private runtime folder: its settings, executor secret and runtime TLS.

:func:`prepare_state` writes the folder the node executor (:mod:`client.node_runtime`)
runs from, at every ``fedcollab node start``: ``settings.json`` (0600, in a 0700
folder) holding the node config the ClientApp gets and the ``flower-supernode`` argv;
the 32-byte secret from which the SuperNode and the executor derive the HMAC key of
the runtime API's ``AcquireTask`` (``--superexec-auth-secret-file``); and a fresh
node-local CA and 127.0.0.1 certificate for that API (:func:`runtime_tls`), so it is
never served ``--insecure``. :func:`load_settings` refuses a settings file other users
can read or write.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import WorkspaceError

__all__ = ["NodeState", "load_settings", "prepare_state", "runtime_tls"]

_SETTINGS = "settings.json"
_SECRET_FILE = "superexec.secret"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True)
class NodeState:
    """Files of one node's runtime folder (created by :func:`prepare_state`)."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / _SETTINGS

    @property
    def secret(self) -> Path:
        return self.root / _SECRET_FILE

    @property
    def tls_ca(self) -> Path:
        return self.root / "runtime-ca.crt"

    @property
    def tls_cert(self) -> Path:
        return self.root / "runtime.crt"

    @property
    def tls_key(self) -> Path:
        return self.root / "runtime.key"


def _write_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, private=True)


def runtime_tls(state: NodeState) -> None:
    """A node-local CA and a 127.0.0.1 certificate for the runtime API (fresh each start)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcollab node runtime CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(state.tls_ca, ca.public_bytes(serialization.Encoding.PEM))
    write_atomic(state.tls_cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        state.tls_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def prepare_state(
    root: Path,
    *,
    node_config: Mapping[str, str],
    supernode: Sequence[str],
    runtime_port: int,
) -> NodeState:
    """Write the node's private runtime folder: settings (0600), secret, runtime TLS.

    ``supernode`` is the ``flower-supernode`` argv *without* the runtime API
    options, which are added here.
    """
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    state = NodeState(root.resolve())
    _write_private(state.secret, secrets.token_bytes(32))
    runtime_tls(state)
    argv = [
        *supernode,
        "--isolation", "process",
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
        "--ssl-certfile", str(state.tls_cert),
        "--ssl-keyfile", str(state.tls_key),
        "--ssl-ca-certfile", str(state.tls_ca),
        "--superexec-auth-secret-file", str(state.secret),
    ]  # fmt: skip
    settings = {
        "node_config": dict(node_config),
        "supernode": argv,
        "runtime_address": f"127.0.0.1:{runtime_port}",
    }
    _write_private(state.settings, (json.dumps(settings, indent=2) + "\n").encode())
    return state


def load_settings(state: NodeState) -> dict[str, Any]:
    """Read ``settings.json``; refuse one that other users can read or write."""
    try:
        mode = state.settings.stat().st_mode
    except OSError as exc:
        raise WorkspaceError(
            f"node settings {state.settings} are missing",
            hint="start the node with `fedcollab node start`",
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WorkspaceError(
            f"node settings {state.settings} are readable by other users",
            hint=f"chmod 600 {state.settings}",
        )
    data: dict[str, Any] = json.loads(state.settings.read_text())
    return data
