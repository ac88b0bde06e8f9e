"""A small federation's audit logs, built with the real trail, log and cosigning code.

One coordinator and two partners, each with its own SQLite log and Ed25519
key (``audit.key``/``audit.pub`` as ``fedcollab node keygen`` writes them).
A job run logs what the real nodes log (``client/client_app.py``): partners
``request.received`` (``request``: :func:`client.audit.request_digest`;
``request_shared``: :func:`compliance.contribution.shared_request_digest`),
``data.sent`` and, for the decryptor of an encrypted step, ``he.decrypted``;
the coordinator ``round.aggregated``; then the real cosigning exchange
(:func:`compliance.cosigning.build_request` / ``cosign_request``), the
partner's ``checkpoint.cosigned`` record and the coordinator's
``checkpoint.cosignatures`` record.  Attacks are built on top by a malicious
operator that holds the coordinator's key (and only that key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.client.audit import request_digest
from fedcollab.compliance.bundle import export_bundle
from fedcollab.compliance.contribution import shared_request_digest
from fedcollab.compliance.cosigning import CosignRecord, build_request, cosign_request
from fedcollab.compliance.trail import Trail, create_party_key, digest_bytes, digest_vector

COORDINATOR = "coordinator"
PARTNERS = ("region-1", "region-2")
JOB = "churn"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Party:
    name: str
    key: Path
    pub: Path
    trail: Trail


@dataclass
class World:
    root: Path
    coordinator: Party
    partners: dict[str, Party]
    cosigned: dict[str, CosignRecord] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path) -> World:
        def party(name: str) -> Party:
            key, pub = create_party_key(root / name, name)
            return Party(name, key, pub, Trail.open(root / name / "audit.db", key, actor=name))

        return cls(root, party(COORDINATOR), {p: party(p) for p in PARTNERS})

    def run_job(
        self,
        run: str,
        *,
        steps: tuple[str, ...] = ("round-1", "round-2"),
        coordinator_logs: bool = True,
        cosign: bool = True,
        request_override: Mapping[str, Mapping[str, Any]] | None = None,
        encrypted_step: str | None = None,
        decrypted: str | None = None,
        told_contributions: Mapping[str, str] | None = None,
    ) -> None:
        """One job run, logged as ``client/client_app.py`` and the coordinator log it.

        ``request_override`` changes what the coordinator sends a partner (in every
        step).  ``encrypted_step`` is summed under CKKS: each partner's request carries
        its own ``he`` meta (sealed key), so only ``request_shared`` is comparable; then
        region-1 decrypts the aggregate (``query.he_decrypt`` in ``<step>.decrypt``) and
        logs ``he.decrypted`` of ``decrypted`` (default: the logged aggregate) with the
        contributors' signed reply digests (default: what each sent; overridden per
        partner by ``told_contributions``)."""
        head = {"job": JOB, "digest": DIGEST, "run": run}
        coord = self.coordinator.trail
        if coordinator_logs:
            coord.record("job.started", head)
        aggregates: list[int] = []
        sent: dict[str, dict[str, str]] = {p: {} for p in self.partners}
        for step in (*steps, *((encrypted_step,) if encrypted_step else ())):
            encrypted = step == encrypted_step
            contributions: dict[str, str] = {}
            total = np.zeros(4)
            model = np.full(4, 0.5)
            for i, (name, p) in enumerate(sorted(self.partners.items())):
                meta: dict[str, Any] = {
                    "job": JOB, "run": run, "lr": 0.1, **(request_override or {}).get(name, {})
                }  # fmt: skip
                if encrypted:  # per partner: its sealed job key (compliance.contribution Notes)
                    meta["he"] = {"sealed": f"job key sealed to {name}", "params": "wide"}
                body = {**head, "action": "query.train", "step": step}
                p.trail.record(
                    "request.received",
                    {
                        **body,
                        "request": request_digest(meta, model),
                        "request_shared": shared_request_digest(meta, model),
                    },
                )
                vec = np.arange(4.0) + i
                total += vec
                reply = (
                    digest_bytes(f"ciphertext {name} {run}".encode())
                    if encrypted
                    else digest_vector(vec)
                )
                p.trail.record("data.sent", {**body, "reply": reply, "n_values": 4})
                contributions[name] = reply
                sent[name][step] = reply
            if not coordinator_logs:
                continue
            aggregate = digest_bytes(f"sum {run}".encode()) if encrypted else digest_vector(total)
            aggregates.append(
                coord.record(
                    "round.aggregated",
                    {
                        **head,
                        "step": step,
                        "partners": sorted(contributions),
                        "contributions": contributions,
                        "aggregate": aggregate,
                        "protection": "ckks-sum" if encrypted else "plaintext-sum",
                    },
                )
            )
            if encrypted:
                aggregates.append(
                    self._decrypt(
                        head,
                        step,
                        ciphertext=decrypted or aggregate,
                        contributors={**contributions, **(told_contributions or {})},
                        total=total,
                        sent=sent["region-1"],
                    )
                )
        if coordinator_logs:
            coord.record("job.completed", head)
        if cosign and coordinator_logs:
            self._cosign(run, aggregates, sent)

    def _decrypt(
        self,
        head: Mapping[str, str],
        step: str,
        *,
        ciphertext: str,
        contributors: Mapping[str, str],
        total: np.ndarray,
        sent: dict[str, str],
    ) -> int:
        """region-1 decrypts ``step``'s aggregate: the events of ``client_app._serve`` for
        ``query.he_decrypt`` and the coordinator's ``round.aggregated`` of the result."""
        decryptor = self.partners["region-1"].trail
        body = {**head, "action": "query.he_decrypt", "step": f"{step}.decrypt"}
        bindings = [{"statement": {"partner": n, "reply": d}} for n, d in contributors.items()]
        meta: dict[str, Any] = {
            "job": JOB, "run": head["run"], "bindings": bindings,
            "he": {"step": step, "contributors": sorted(contributors), "params": "wide"},
        }  # fmt: skip
        decryptor.record(
            "request.received",
            {
                **body,
                "request": request_digest(meta, None),
                "request_shared": shared_request_digest(meta, None),
            },
        )
        decryptor.record(
            "he.decrypted",
            {**body, "step": step, "ciphertext": ciphertext, "contributors": dict(contributors)},
        )
        values = digest_vector(total)
        decryptor.record("data.sent", {**body, "reply": values, "n_values": len(total)})
        sent[f"{step}.decrypt"] = values
        return self.coordinator.trail.record(
            "round.aggregated",
            {
                **head,
                "step": f"{step}.decrypt",
                "partners": ["region-1"],
                "contributions": {"region-1": values},
                "aggregate": values,
                "protection": "ckks-decrypted",
            },
        )

    def _cosign(self, run: str, aggregates: list[int], sent: dict[str, dict[str, str]]) -> None:
        coord = self.coordinator.trail
        signed = coord.log.checkpoint()
        names = []
        for name, p in sorted(self.partners.items()):
            previous = self.cosigned.get(name)
            request = build_request(
                coord.log,
                signed,
                aggregate_indices=aggregates,
                previous_size=previous.size if previous else None,
            )
            cosigned = cosign_request(
                request,
                coordinator_key=(COORDINATOR, coord.signer.public_key),
                previous=previous,
                partner=name,
                job_digest=DIGEST,
                sent_digests=sent[name],
                signer=p.trail.signer,
                run=run,
            )
            cp = cosigned.checkpoint
            p.trail.record(
                "checkpoint.cosigned",
                {"digest": DIGEST, "run": run, "origin": cp.origin, "size": cp.size,
                 "root": cp.root.hex()},
            )  # fmt: skip
            self.cosigned[name] = CosignRecord(cp.size, cp.root)
            coord.log.add_cosignature(cosigned, name=name, public_key=p.trail.signer.public_key)
            names.append(name)
        cp = signed.checkpoint
        coord.record(
            "checkpoint.cosignatures",
            {"job": JOB, "digest": DIGEST, "run": run,
             "checkpoint": {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()},
             "cosigned_by": names, "cosign_refused": {}},
        )  # fmt: skip

    def close(self) -> None:
        for p in (self.coordinator, *self.partners.values()):
            p.trail.close()

    def export(self, out: Path) -> dict[str, Path]:
        """Every party exports its own bundle (the coordinator's names the partners' keys)."""
        keys = {n: p.trail.signer.public_key for n, p in self.partners.items()}
        export_bundle(self.coordinator.trail.log, out / COORDINATOR, public_keys=keys)
        for name, p in self.partners.items():
            export_bundle(p.trail.log, out / name, public_keys={})
        return {n: out / n for n in (COORDINATOR, *self.partners)}

    def trust_args(self) -> list[str]:
        """``--trust`` of every party, from the keys each party handed over."""
        out: list[str] = []
        for p in (self.coordinator, *self.partners.values()):
            out += ["--trust", f"{p.name}={p.pub}"]
        return out
