"""``fedcollab registry`` and ``fedcollab grant``, run through ``cli.app.main``.

The groups are mounted on a fresh Typer app patched in as ``cli.app.app``, so
these tests hold whether or not the lead has wired them into ``_GROUPS`` yet.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from rich.console import Console

import fedcollab.cli.app
import fedcollab.cli.grant
import fedcollab.cli.registry  # noqa: F401 - loaded as cli.grant / cli.registry below
from fedcollab import cli
from fedcollab.common.keys import Signer, format_verifier_key, public_key_to_pem
from fedcollab.compliance.grants import load_signed_grant, save_signed_grant
from fedcollab.compliance.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "registry.example.json"
FUTURE = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(cli.registry.app, name="registry")
    app.add_typer(cli.grant.app, name="grant")
    monkeypatch.setattr(cli.app, "app", app)
    # Wide consoles so that Rich does not wrap the lines the tests look for.
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(cli.registry, "_out", Console(width=300))
    monkeypatch.setattr(cli.grant, "_out", Console(width=300))


def run(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["fedcollab", *map(str, args)])
    try:
        cli.app.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "brand-a.key"
    signer = Signer.generate(key)
    pub = tmp_path / "brand-a.pub"
    pub.write_text(format_verifier_key("brand-a", signer.public_key) + "\n")
    return key, pub


def sign_args(key: Path, out: Path, *extra: str) -> list[str | Path]:
    return [
        "grant",
        "sign",
        "--partner",
        "brand-a",
        "--dataset",
        "online-shoppers-region-1",
        "--purpose",
        "purchase-prediction",
        "--purpose",
        "user-segmentation",
        "--valid-until",
        FUTURE,
        "--consent",
        f"purchase-prediction:separate-provision:crm-consent:campaign/2026-03:12330:{FUTURE}",
        "--key",
        key,
        "--out",
        out,
        *extra,
    ]


# --- registry ------------------------------------------------------------------------


def test_registry_init_add_show(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reg = tmp_path / "registry.json"
    assert run(monkeypatch, "registry", "init", reg, "--controller", "Example Mall") == 0
    assert load_registry(reg).purposes == ()
    purposes = json.loads(EXAMPLE.read_text())["purposes"]
    for purpose in purposes:
        path = tmp_path / f"{purpose['id']}.json"
        path.write_text(json.dumps(purpose))
        assert run(monkeypatch, "registry", "add-purpose", reg, "--from", path) == 0
    assert load_registry(reg).purposes == load_registry(EXAMPLE).purposes
    # The example's purposes name another controller than this registry's: said, not refused.
    err = capsys.readouterr().err
    assert "names controller" in err and "'Example Mall'" in err
    same = tmp_path / "same.json"
    controller = load_registry(EXAMPLE).controller
    assert run(monkeypatch, "registry", "init", same, "--controller", controller) == 0
    assert run(monkeypatch, "registry", "add-purpose", same, "--from", path) == 0
    assert "names controller" not in capsys.readouterr().err
    assert run(monkeypatch, "registry", "show", reg) == 0
    out = capsys.readouterr().out
    assert "purchase-prediction" in out and "PIPIA-2026-007" in out
    assert "consent / legitimate-interests" in out and "sensitive" in out


def test_registry_init_refuses_to_overwrite(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reg = tmp_path / "registry.json"
    reg.write_text("{}")
    assert run(monkeypatch, "registry", "init", reg, "--controller", "X") == 30
    assert "already exists" in capsys.readouterr().err
    assert reg.read_text() == "{}"


def test_registry_add_purpose_refuses_duplicates_and_invalid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reg = tmp_path / "registry.json"
    reg.write_text(EXAMPLE.read_text())
    purpose = json.loads(EXAMPLE.read_text())["purposes"][0]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(purpose))
    assert run(monkeypatch, "registry", "add-purpose", reg, "--from", path) == 30
    assert "already registered" in capsys.readouterr().err
    purpose.update(id="new-purpose", impact_assessment_ref="")
    path.write_text(json.dumps(purpose))
    assert run(monkeypatch, "registry", "add-purpose", reg, "--from", path) == 30
    err = capsys.readouterr().err
    assert "PIPIA" in err and "What to do" in err
    assert load_registry(reg) == load_registry(EXAMPLE)


def test_registry_show_bad_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reg = tmp_path / "registry.json"
    reg.write_text('{"version": 1, "controller": "x", "purposes": [], "extra": 1}')
    assert run(monkeypatch, "registry", "show", reg) == 30
    assert "extra" in capsys.readouterr().err


# --- grant ---------------------------------------------------------------------------


def test_grant_sign_then_verify(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    key, pub = keys
    out = tmp_path / "grant.json"
    assert run(monkeypatch, *sign_args(key, out, "--dataset-hash", "sha256:" + "0f" * 32)) == 0
    signed = load_signed_grant(out)
    assert signed.grant.purposes == ("purchase-prediction", "user-segmentation")
    assert signed.grant.consents[0].evidence_ref == "crm-consent:campaign/2026-03"
    assert signed.grant.consents[0].subjects_covered == 12330
    capsys.readouterr()
    assert run(monkeypatch, "grant", "verify", out, "--public-key", pub) == 0
    assert "Grant verified" in capsys.readouterr().out
    pem = tmp_path / "brand-a.pem.pub"
    pem.write_text(public_key_to_pem(Signer.load(key).public_key))
    assert run(monkeypatch, "grant", "verify", out, "--public-key", pem) == 0


def test_grant_verify_refuses_tampering_with_exit_32(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    key, pub = keys
    out = tmp_path / "grant.json"
    assert run(monkeypatch, *sign_args(key, out)) == 0
    doc = json.loads(out.read_text())
    doc["grant"]["purposes"].append("payment-risk-scoring")
    out.write_text(json.dumps(doc))
    assert run(monkeypatch, "grant", "verify", out, "--public-key", pub) == 32
    err = capsys.readouterr().err
    assert "PolicyRefusal" in err and "does not verify" in err


def test_grant_verify_refuses_other_key_and_flipped_signature(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    key, _ = keys
    out = tmp_path / "grant.json"
    assert run(monkeypatch, *sign_args(key, out)) == 0
    other = tmp_path / "other.pub"
    other.write_text(format_verifier_key("brand-a", Signer.generate().public_key))
    assert run(monkeypatch, "grant", "verify", out, "--public-key", other) == 32
    signed = load_signed_grant(out)
    raw = bytearray(base64.b64decode(signed.signature))
    raw[-1] ^= 0x01
    flipped = signed.model_copy(update={"signature": base64.b64encode(bytes(raw)).decode()})
    save_signed_grant(flipped, out)
    assert run(monkeypatch, "grant", "verify", out, "--public-key", keys[1]) == 32


def test_grant_verify_checks_validity_at(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    key, pub = keys
    out = tmp_path / "grant.json"
    assert run(monkeypatch, *sign_args(key, out)) == 0
    args = ["grant", "verify", out, "--public-key", pub, "--at"]
    assert run(monkeypatch, *args, "2020-01-01T00:00:00Z") == 32
    assert "not at 2020-01-01T00:00:00Z" in capsys.readouterr().err
    assert run(monkeypatch, *args, FUTURE) == 32  # valid_until is excluded


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--valid-until", "2027-01-01"], 2),  # no timezone: a usage error
        (["--consent", "purchase-prediction:general:ref"], 2),
        (["--consent", f"purchase-prediction:implied:ref:1:{FUTURE}"], 2),
        (["--consent", f"purchase-prediction:general:alice@example.com:1:{FUTURE}"], 30),
        (["--consent", f"payment-risk-scoring:general:ref:1:{FUTURE}"], 30),
        (["--dataset-hash", "md5:00"], 30),
    ],
)
def test_grant_sign_refuses_bad_input(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keys: tuple[Path, Path],
    extra: list[str],
    code: int,
) -> None:
    out = tmp_path / "grant.json"
    assert run(monkeypatch, *sign_args(keys[0], out, *extra)) == code
    assert not out.exists()


def test_grant_sign_refuses_to_overwrite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    out = tmp_path / "grant.json"
    out.write_text("keep")
    assert run(monkeypatch, *sign_args(keys[0], out)) == 30
    assert out.read_text() == "keep"


def test_parse_consent_allows_colons_in_evidence_ref() -> None:
    record = cli.grant.parse_consent("p-1:explicit:sys:a:b:7:2027-01-01T08:00:00+08:00")
    assert record.evidence_ref == "sys:a:b"
    assert record.subjects_covered == 7
    assert record.valid_until == datetime(2027, 1, 1, tzinfo=UTC)
