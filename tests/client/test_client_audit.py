"""client/audit.py: a session keeps the partner's trail open for one request (or one
batch), every record still durable on return; another process waits on the log's lock
only while a session is open."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedcollab.client.audit import PartnerAudit
from fedcollab.compliance import trail as trail_module
from fedcollab.compliance.store import LogStore
from fedcollab.compliance.trail import Trail, create_party_key


def _audit(tmp_path: Path) -> PartnerAudit:
    key, _ = create_party_key(tmp_path / "keys", "alice")
    return PartnerAudit(partner="alice", db=tmp_path / "audit.db", key=key, coordinator_key=None)


def _entries(tmp_path: Path) -> list[str]:
    """The log's events, read from another process (the lock must be free)."""
    code = (
        "import json, sys\n"
        "from fedcollab.compliance.trail import Trail\n"
        "from pathlib import Path\n"
        "with Trail.open(Path(sys.argv[1]), Path(sys.argv[2]), actor='alice') as t:\n"
        "    print(json.dumps([json.loads(e)['type'] for e in t.log.entries()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "audit.db"), str(tmp_path / "keys/audit.key")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(out.stdout))


def test_a_session_opens_the_trail_once_for_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = _audit(tmp_path)
    opens: list[Path] = []
    real = Trail.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Trail], db: Path, key: Path, *, actor: str) -> Trail:
        opens.append(db)
        return real(cls, db, key, actor=actor)  # type: ignore[no-any-return]

    monkeypatch.setattr(trail_module.Trail, "open", classmethod(counting))
    with audit.session():
        audit.record("request.received", {"step": "a"})
        # Another PartnerAudit of the same log on this thread (e.g. a batch's item)
        # joins the open session instead of waiting on the lock this thread holds.
        with _audit_again(audit).session():
            _audit_again(audit).record("data.sent", {"step": "a"})
        audit.record("request.refused", {"step": "b"})
    assert opens == [audit.db]
    audit.record("request.received", {"step": "c"})  # no session: opened for the call
    assert len(opens) == 2
    assert _entries(tmp_path) == [
        "request.received",
        "data.sent",
        "request.refused",
        "request.received",
    ]


def _audit_again(audit: PartnerAudit) -> PartnerAudit:
    return PartnerAudit(
        partner=audit.partner, db=audit.db, key=audit.key, coordinator_key=audit.coordinator_key
    )


def test_records_are_durable_before_the_session_ends_and_the_lock_is_released(
    tmp_path: Path,
) -> None:
    audit = _audit(tmp_path)
    with audit.session():
        audit.record("request.received", {"step": "a"})
        # In the database the moment record() returns (the lock only guards appends).
        store = LogStore(audit.db)
        try:
            assert store.size == 1
        finally:
            store.close()
    # Released at the end of the session, also when the request failed inside it.
    with pytest.raises(RuntimeError), audit.session():
        audit.record("request.received", {"step": "b"})
        raise RuntimeError("the action failed")
    assert _entries(tmp_path) == ["request.received", "request.received"]


def test_sessions_are_per_thread(tmp_path: Path) -> None:
    """A session on one thread is not another thread's: that one opens its own and waits
    for the lock, as a second process would."""
    audit = _audit(tmp_path)
    done = threading.Event()

    def other() -> None:
        audit.record("data.sent", {"step": "other"})
        done.set()

    with audit.session():
        audit.record("request.received", {"step": "a"})
        thread = threading.Thread(target=other)
        thread.start()
        assert not done.wait(0.5)  # blocked on the lock this thread's session holds
    thread.join(60)
    assert done.is_set()
    assert _entries(tmp_path) == ["request.received", "data.sent"]
