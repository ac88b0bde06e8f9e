"""The partner's Flower ClientApp (Message API).

Every request goes through :func:`_serve`: decode, load and validate the
partner's data, check the job is one this partner takes part in, run the
handler, encode. Any fedcollab error becomes a refusal reply that names the
error class only: no data values, file paths or row contents leave the
partner; the full diagnostics go to the node's own log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.handlers import HANDLERS, check_job
from client.partner_data import load_partner, source_from_config
from common.errors import FedcollabError
from common.jobspec import JobSpec
from common.serde import decode, encode, refusal

__all__ = ["app", "make_client_app"]

log = logging.getLogger("fedcollab.client")


def _serve(msg: Message, context: Context, overrides: Mapping[str, str]) -> Message:
    action = msg.metadata.message_type
    run_config = {**context.run_config, **overrides}
    try:
        payload = decode(msg.content)
        spec = JobSpec.from_json(str(payload.meta["job"]))
        ev = spec.evaluation
        data = load_partner(
            source_from_config(context.node_config, run_config),
            validation_fraction=ev.validation_fraction,
            test_fraction=ev.test_fraction,
            split_seed=ev.split_seed,
        )
        check_job(data, spec)
        handler = HANDLERS[action]
        _limit_threads(action)
        meta, vector = handler(data, spec, payload)
        return Message(encode(meta, vector), reply_to=msg)
    except FedcollabError as exc:
        log.error("refusing %s: %s", action, exc.diagnostics())
        return Message(
            refusal(exc, reason=f"{type(exc).__name__} at the partner; see its node log"),
            reply_to=msg,
        )
    except KeyError as exc:
        log.error("refusing %s: malformed request (%s)", action, exc)
        return Message(
            encode({"refused": "ProtocolError", "reason": "malformed request"}), reply_to=msg
        )


def _limit_threads(action: str) -> None:
    """One core per partner process: simulations and demos run many side by side."""
    if action.startswith(("train.", "evaluate.")):
        import torch

        torch.set_num_threads(1)


def make_client_app(overrides: Mapping[str, str] | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` add run-config keys (the simulation's partner files)."""
    fixed = dict(overrides or {})
    client_app = ClientApp()

    def serve(msg: Message, context: Context) -> Message:
        return _serve(msg, context, fixed)

    for category, action in (
        ("query", "handshake"),
        ("query", "moments"),
        ("train", "fedavg"),
        ("evaluate", "fedavg"),
        ("query", "kmeans_seed"),
        ("query", "kmeans_step"),
        ("query", "segment_profile"),
    ):
        getattr(client_app, category)(action)(serve)
    return client_app


#: The ClientApp a real SuperNode runs (pyproject ``[tool.flwr.app.components]``).
app = make_client_app()
