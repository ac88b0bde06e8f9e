"""The federation workspace: TLS material, node keys and connection settings.

A workspace is a folder the platform operator creates once per federation::

    <ws>/federation.json          name, address, ports (this module's `Federation`)
    <ws>/ca/ca.key, ca.crt        the federation's private CA (operator only)
    <ws>/coordinator/server.*     the coordinator's TLS certificate and key
    <ws>/nodes/<partner>/node.key a partner's SuperNode authentication key (OpenSSH)
    <ws>/nodes/<partner>/node.pub its public half, which the operator registers
    <ws>/nodes/<partner>/audit.*  the partner's Ed25519 audit key (demos and tests)
    <ws>/coordinator/audit.*      the coordinator's audit log and Ed25519 key
    <ws>/partners/<partner>/audit.pub  registered partners' audit verifier keys
    <ws>/flwr-home/config.toml    the Flower CLI connection used to submit jobs

In a real federation each partner runs ``fedcollab node keygen`` on its own
premises and sends only ``node.pub`` to the operator; ``federation init
--partner NAME`` creates keys for local demos and tests.

Notes
-----
- The CA and server keys are ECDSA P-256 (128-bit security level, NIST
  SP 800-57 Part 1 Table 2); TLS certificates are valid for 365 days.
- SuperNode authentication keys are ECDSA P-384 in OpenSSH format, which is
  what Flower's ``flwr supernode register`` and ``flower-supernode
  --auth-supernode-private-key`` accept.
- Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedcollab.common.atomic import write_atomic, write_json_atomic
from fedcollab.common.errors import WorkspaceError
from fedcollab.compliance.trail import create_party_key

__all__ = ["Federation", "Workspace", "generate_node_key"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CERT_DAYS = 365


@dataclass(frozen=True)
class Federation:
    """Connection settings of one federation."""

    name: str
    host: str = "127.0.0.1"
    port: int = 9092

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise WorkspaceError(
            f"invalid {kind} name {name!r}",
            hint="use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, private=True, exclusive=exclusive)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_node_key(directory: Path) -> tuple[Path, Path]:
    """Create a SuperNode authentication key pair in ``directory``.

    Returns ``(private_key_path, public_key_path)``. Refuses to overwrite.
    """
    private_path, public_path = directory / "node.key", directory / "node.pub"
    if private_path.exists():
        raise WorkspaceError(
            f"{private_path} already exists",
            hint="a node keeps its key; delete it first only if you mean to re-register",
        )
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        exclusive=True,
    )
    write_atomic(
        public_path,
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n",
    )
    return private_path, public_path


class Workspace:
    """A federation workspace folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths --------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "federation.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.root / "coordinator" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "coordinator" / "server.key"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def state_dir(self) -> Path:
        return self.root / "coordinator" / "state"

    @property
    def audit_db(self) -> Path:
        """The coordinator's own audit log."""
        return self.root / "coordinator" / "audit.db"

    @property
    def audit_key(self) -> Path:
        return self.root / "coordinator" / "audit.key"

    @property
    def audit_pub(self) -> Path:
        """The coordinator's audit verifier key: partners pin it to cosign."""
        return self.root / "coordinator" / "audit.pub"

    def partner_audit_pub(self, partner: str) -> Path:
        """A registered partner's audit verifier key (grants, cosignatures)."""
        return self.root / "partners" / check_name("partner", partner) / "audit.pub"

    def node_dir(self, partner: str) -> Path:
        return self.root / "nodes" / check_name("partner", partner)

    # -- lifecycle ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 9092,
        partners: tuple[str, ...] = (),
    ) -> Workspace:
        """Create a new workspace: CA, coordinator certificate, connection config."""
        check_name("federation", name)
        ws = cls(root)
        if ws.config_path.exists():
            raise WorkspaceError(
                f"{root} already holds a federation workspace",
                hint="choose another folder, or delete this one if you mean to start over",
            )
        root.mkdir(parents=True, exist_ok=True)
        fed = Federation(name=name, host=host, port=port)
        ws._make_tls(fed)
        ws._write_flwr_config(fed)
        create_party_key(root / "coordinator", "coordinator")
        write_json_atomic(ws.config_path, asdict(fed), sort_keys=False)
        for partner in partners:
            generate_node_key(ws.node_dir(partner))
            create_party_key(ws.node_dir(partner), partner)
        return ws

    @classmethod
    def open(cls, root: Path) -> Workspace:
        ws = cls(root)
        if not ws.config_path.exists():
            raise WorkspaceError(
                f"{root} is not a federation workspace (no federation.json)",
                hint="create one with `fedcollab federation init DIR --name NAME`",
            )
        for needed in (ws.ca_cert, ws.server_cert, ws.server_key):
            if not needed.exists():
                raise WorkspaceError(
                    f"workspace {root} is incomplete: {needed} is missing",
                    hint="re-create the workspace with `fedcollab federation init`",
                )
        return ws

    @property
    def federation(self) -> Federation:
        try:
            raw = json.loads(self.config_path.read_text())
            return Federation(name=str(raw["name"]), host=str(raw["host"]), port=int(raw["port"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkspaceError(
                f"{self.config_path} is unreadable: {exc}",
                hint="re-create the workspace with `fedcollab federation init`",
            ) from exc

    # -- internals ----------------------------------------------------------
    def _make_tls(self, fed: Federation) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedcollab CA {fed.name}")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
        for ip in {"127.0.0.1", "::1", fed.host}:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                sans.append(x509.DNSName(ip))
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{fed.name} coordinator")])
            )
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(self.root / "ca" / "ca.key", _pem_key(ca_key))
        write_atomic(self.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.server_key, _pem_key(server_key))
        write_atomic(self.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))

    def _write_flwr_config(self, fed: Federation) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.flwr_home / "config.toml",
            "[superlink]\n"
            f'default = "{fed.name}"\n\n'
            f"[superlink.{fed.name}]\n"
            f'address = "{fed.address}"\n'
            f'root-certificates = "{self.ca_cert.resolve()}"\n',
        )
