"""client/fleet_link.py: a Fleet API answer Flower gives up on (500 from a locked
SuperLink, 429) is retried with Flower's backoff; a link that stays down is recorded for
the launcher's typed exit."""

from __future__ import annotations

import threading
import time
import types

import flwr.supernode.fleet_http_connection as flower_http
import httpx
import pytest
from flwr.supercore.heartbeat import HeartbeatSender

from fedcollab.client.fleet_link import LinkWatch, install_link_retry
from fedcollab.common.errors import FederationError, FleetLinkError


class _FlakyFleet:
    """A real HTTP server that answers 500 ``failures`` times, then 200: what Flower's
    SuperLink answers when its SQLite state stays locked past its 5 s busy timeout (an
    unhandled "database is locked" becomes ``{"detail": "Internal server error."}``,
    flwr/supercore/error/http.py)."""

    def __init__(self, failures: int) -> None:
        import http.server

        self.failures, self.calls = failures, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                failing = outer.calls <= outer.failures
                body = b'{"detail":"Internal server error."}' if failing else b"ok"
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/fleet/pull-messages"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pull(self) -> str:
        with httpx.Client() as client:
            response = client.post(self.url)
            response.raise_for_status()
            return response.text

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_flower_gives_up_on_a_locked_superlink_and_fleet_poll_retries() -> None:
    """Flower's own invoker gives up at the first 500 (the node then exited); the one
    fleet_poll installs retries it with Flower's backoff and the call succeeds."""
    fleet = _FlakyFleet(failures=2)
    try:
        with pytest.raises(httpx.HTTPStatusError):
            flower_http.make_simple_http_retry_invoker().invoke(fleet.pull)
        assert fleet.calls == 1
        fleet.calls = 0
        watch = LinkWatch()
        invoker = watch.invoker_factory(flower_http.make_simple_http_retry_invoker)()
        invoker.max_time = 30.0  # as --max-wait-time sets it
        assert invoker.invoke(fleet.pull) == "ok"
        assert fleet.calls == 3 and watch.retried == 2 and watch.down is None
    finally:
        fleet.close()


def test_a_link_that_stays_down_is_recorded_for_a_typed_exit() -> None:
    fleet = _FlakyFleet(failures=10**6)
    try:
        watch = LinkWatch()
        invoker = watch.invoker_factory(flower_http.make_simple_http_retry_invoker)()
        invoker.max_time = 1.5
        started = time.monotonic()
        with pytest.raises(httpx.HTTPStatusError):
            invoker.invoke(fleet.pull)
        assert time.monotonic() - started < 10  # bounded by max_time (plus one call)
        assert isinstance(watch.down, httpx.HTTPStatusError) and watch.retried >= 1
        assert FleetLinkError.exit_code == 17 and issubclass(FleetLinkError, FederationError)
    finally:
        fleet.close()


def test_the_heartbeat_thread_survives_a_locked_superlink() -> None:
    """Flower's HeartbeatSender lets a 500 end its thread (the SuperLink then counts the
    node offline); the installed one retries it and keeps beating."""
    fleet = _FlakyFleet(failures=1)
    beats = threading.Event()

    def beat() -> bool:
        fleet.pull()
        beats.set()
        return True

    try:
        watch = LinkWatch()
        sender = watch.heartbeat_sender(HeartbeatSender)(beat)
        sender.start()
        assert beats.wait(30.0), "no heartbeat went through after the 500"
        assert sender.is_running and watch.retried == 1
        sender.stop()
    finally:
        fleet.close()


def test_install_link_retry_patches_flower_s_fleet_module() -> None:
    module = types.ModuleType("stand_in")
    module.make_simple_http_retry_invoker = flower_http.make_simple_http_retry_invoker  # type: ignore[attr-defined]
    module.HeartbeatSender = HeartbeatSender  # type: ignore[attr-defined]
    assert install_link_retry(module, LinkWatch())
    assert issubclass(module.HeartbeatSender, HeartbeatSender)  # type: ignore[attr-defined]
    assert module.HeartbeatSender is not HeartbeatSender  # type: ignore[attr-defined]
    # The installed Flower (1.41) has both names; a changed module is left alone.
    assert callable(flower_http.make_simple_http_retry_invoker)
    assert flower_http.HeartbeatSender is HeartbeatSender
    assert not install_link_retry(types.ModuleType("changed"), LinkWatch())
