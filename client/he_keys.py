"""A partner node's homomorphic-encryption state for its running jobs.

Each request is a separate Flower message, possibly served after the node
restarted, so the per-run keys live on the partner's disk, under
``<state-dir>/he/<run>/`` (``state-dir`` from the node config; by default the
directory of the node's audit log):

- ``transport.key``: the run's X25519 key (made at the handshake);
- ``ckks.key``: the job's CKKS secret keys (from the key ceremony);
- ``decrypted/<step>``: one marker per aggregate this node decrypted, so a
  coordinator cannot ask twice for the same step;
- ``secagg/<step>``: a masked-aggregation session between its stages
  (:mod:`client.secagg_node`).

Files are created 0600 and written atomically. :meth:`NodeKeyStore.erase`
removes a run's keys when the job ends (after cosigning): keys rotate per job.

A node's executor serves every message from one process, and loading the CKKS
contexts took ~33 ms per message (``privacy.ckks.SecretKeys.from_bytes``), so the
loaded keys are kept in memory (:data:`_LOADED`, at most :data:`_LOADED_MAX` runs) and
reused only while ``ckks.key`` still exists with the same bytes (read and hashed at
every use); :meth:`NodeKeyStore.erase` drops them with the file, and every use first
forgets the keys of any run whose file is gone (erased by another process), so keys
leave memory when they leave disk or, at the latest, at the next encrypted message.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer
from fedcollab.privacy.ckks import SecretKeys
from fedcollab.privacy.key_transport import PeerKeys, TransportKey

__all__ = ["NodeKeyStore", "check_own_entry", "load_peer_keys", "write_private"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

#: Loaded CKKS keys by key file: (sha256 of the file's bytes, keys). See module notes.
_LOADED: OrderedDict[Path, tuple[bytes, SecretKeys]] = OrderedDict()
_LOADED_MAX = 4


def load_peer_keys(config: Mapping[str, str]) -> PeerKeys:
    """The partners' audit keys pinned at this node (``peer-keys`` in its config)."""
    path = config.get("peer-keys")
    if not path:
        raise CiphertextError(
            "this node has no pinned peer keys and cannot take part in encrypted jobs",
            hint="start it with --peer-keys (written by `fedcollab federation peers`)",
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CiphertextError(
            f"cannot read peer keys {path}: {exc}", hint="check --peer-keys"
        ) from exc
    peers = PeerKeys.from_json(text)
    check_own_entry(peers, config)
    _check_confirmed(peers, config)
    return peers


def _check_confirmed(peers: PeerKeys, config: Mapping[str, str]) -> None:
    """Refuse a peer list other than the one the partner confirmed at ``node start``
    (``peers.confirmed`` beside its audit key, client.peer_trust), if it confirmed one:
    the file is read at every request, and one changed after the start would otherwise
    be trusted without the out-of-band comparison (audit of 2026-12-07)."""
    from fedcollab.client.peer_trust import fingerprint  # it imports this module

    audit_key = config.get("audit-key")
    kept = Path(audit_key).with_name("peers.confirmed") if audit_key else None
    if kept is None or not kept.exists():
        return  # a simulation's node, or a node started before confirmations existed
    confirmed = kept.read_text(encoding="utf-8").strip()
    if fingerprint(peers) != confirmed:
        raise CiphertextError(
            f"the peer keys in {config.get('peer-keys')} are not the list this node's "
            f"partner confirmed at start (fingerprint {confirmed[:16]}...)",
            hint="a peer list changed after `node start`: restart the node, compare the "
            "key ids it shows with each peer out of band, and confirm the new fingerprint",
        )


def check_own_entry(peers: PeerKeys, config: Mapping[str, str]) -> None:
    """Refuse a pinned peer list whose entry for this node is missing or not its own key.

    The list is written by an operator and may come from the coordinator; a swapped
    entry for *this* node is the one substitution a node can always detect itself
    (issue 14: a coordinator swapping keys deals its own key to a partner "as" another).
    """
    me, key = config.get("partner"), config.get("audit-key")
    if not me or not key:
        return  # no identity to check against; every signature check still applies
    own = Signer.load(key).public_key
    if peers.keys.get(me) != own:
        raise CiphertextError(
            f"the pinned peer keys {'list another key' if me in peers.keys else 'have no key'} "
            f"under this node's own name {me!r}",
            hint="the peer list was altered or is another federation's: re-pin the partners' "
            "keys you checked yourself (`fedcollab federation peers`) and restart the node",
        )


def write_private(path: Path, data: bytes) -> None:
    """Create the parent (0700) and write ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, private=True)


@dataclass(frozen=True)
class NodeKeyStore:
    root: Path

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> NodeKeyStore:
        state = config.get("state-dir") or (
            str(Path(config["audit-db"]).parent) if config.get("audit-db") else ""
        )
        if not state:
            raise CiphertextError(
                "this node has no state directory for encryption keys",
                hint="start it with --audit-key (keys live beside its audit log)",
            )
        return cls(Path(state) / "he")

    def _run(self, run: str) -> Path:
        if not run:
            raise CiphertextError("an encrypted request must name its run")
        name = _SAFE.sub("_", run)
        if name.strip(".") == "":  # "." or "..": the folder itself or its parent
            raise CiphertextError(f"run name {run!r} is not a folder name", hint="refused")
        return self.root / name

    def transport_key(self, run: str, *, create: bool = False) -> TransportKey:
        path = self._run(run) / "transport.key"
        if path.exists():
            return TransportKey.from_bytes(path.read_bytes())
        if not create:
            raise CiphertextError(
                f"no transport key for run {run}: this node did not take part in its handshake",
                hint="resubmit the job",
            )
        key = TransportKey.generate()
        write_private(path, key.to_bytes())
        return key

    def keys(self, run: str) -> SecretKeys | None:
        path = (self._run(run) / "ckks.key").resolve()
        for kept in [p for p in _LOADED if p != path and not p.exists()]:
            del _LOADED[kept]  # erased meanwhile, e.g. by another process: forget them too
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            _LOADED.pop(path, None)
            return None
        digest = hashlib.sha256(blob).digest()
        cached = _LOADED.get(path)
        if cached is not None and cached[0] == digest:
            _LOADED.move_to_end(path)
            return cached[1]
        keys = SecretKeys.from_bytes(blob)
        _LOADED[path] = (digest, keys)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
        return keys

    def save_keys(self, run: str, keys: SecretKeys) -> None:
        write_private(self._run(run) / "ckks.key", keys.to_bytes())

    def mark_dealt(self, run: str) -> None:
        """This node dealt the run's key (the only decryptor of a plain "ckks" job)."""
        write_private(self._run(run) / "dealt", b"")

    def dealt(self, run: str) -> bool:
        return (self._run(run) / "dealt").is_file()

    def claim_decryption(self, run: str, step: str) -> None:
        """Refuse a second decryption of the same step (one aggregate per step)."""
        marker = self._run(run) / "decrypted" / _SAFE.sub("_", step)
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise CiphertextError(
                f"step {step!r} of run {run} was already decrypted once",
                hint="a coordinator asking twice may be trying to decrypt a single partner's "
                "ciphertext; refused",
            ) from None

    def secagg_session(self, run: str, step: str) -> Path:
        """Where a masked-aggregation session of ``step`` is kept (client.secagg_node)."""
        return self._run(run) / "secagg" / _SAFE.sub("_", step)

    def erase(self, run: str) -> None:
        folder = self._run(run)
        _LOADED.pop((folder / "ckks.key").resolve(), None)
        shutil.rmtree(folder, ignore_errors=True)
