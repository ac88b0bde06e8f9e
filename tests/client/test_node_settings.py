"""A node's settings as one strict model (client.node_settings, issue 17): every key a
node accepts, refused when unknown, missing or malformed; read from the node's own
config, or in a simulation from the ClientApp's own ``sim-partners``, never from the
coordinator's run config (client.partner_data.partner_settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.client.node_settings import DEFAULT_MAX_RUNS_PER_DAY, NodeOptions, NodeSettings
from fedcollab.client.partner_data import PartnerSource, partner_config, partner_settings
from fedcollab.client.run_contract import max_runs_per_day, node_split
from fedcollab.client.supernode import NodeConfig, node_settings
from fedcollab.common.errors import SchemaError

BASE = {"partner": "acme", "data": "/p/acme.csv", "schema": "/p/acme.schema.json"}


def _refused(config: dict[str, object], match: str) -> SchemaError:
    with pytest.raises(SchemaError, match=match) as err:
        NodeSettings.parse(config)
    assert err.value.hint  # says what to do
    return err.value


def test_the_minimal_node_config_parses_with_defaults() -> None:
    s = NodeSettings.parse(BASE)
    assert (s.partner, s.data, s.schema_file) == ("acme", Path(BASE["data"]), Path(BASE["schema"]))
    assert s.audit_db is None and s.dp_only is None and not s.allow_plaintext_vertical
    assert s.max_runs_per_day == DEFAULT_MAX_RUNS_PER_DAY
    assert (s.split_validation, s.split_test, s.split_seed) == (0.1, 0.2, 0)
    # The readers see the keys given, nothing added.
    assert s.as_config() == BASE


def test_every_setting_node_start_writes_parses_back(tmp_path: Path) -> None:
    """The writer (client.supernode.node_settings) and the model agree on every key."""
    src = PartnerSource(partner="acme", data=tmp_path / "a.csv", schema=tmp_path / "a.json")
    cfg = NodeConfig(
        source=src, superlink="x:1", ca_cert=tmp_path / "ca", node_key=tmp_path / "k", port=1,
        audit_db=tmp_path / "audit.db", audit_key=tmp_path / "audit.key",
        coordinator_key=tmp_path / "c.pub", grant=tmp_path / "grant.json",
        peer_keys=tmp_path / "peers.json", budget_db=tmp_path / "budget.db",
        share_explanations=True, vertical_queries=tmp_path / "ids.txt", dp_only=True,
        max_runs_per_day=3, allow_plaintext_vertical=True, label_epsilon=2.5,
        split_validation=0.15, split_test=0.25, split_seed=7, allow_unverified_centroids=True,
    )  # fmt: skip
    written = node_settings(cfg)
    s = NodeSettings.parse(written)
    assert s.as_config() == written
    assert (s.dp_only, s.max_runs_per_day, s.label_epsilon) == (True, 3, 2.5)
    assert s.share_explanations and s.allow_plaintext_vertical and s.allow_unverified_centroids
    assert not NodeSettings.parse(
        {**written, "allow-unverified-centroids": "false"}
    ).allow_unverified_centroids
    assert s.budget_db == (tmp_path / "budget.db").resolve()
    assert node_split(written).split_seed == 7 and max_runs_per_day(written) == 3


def test_node_start_refuses_a_split_no_job_could_use(tmp_path: Path) -> None:
    src = PartnerSource(partner="acme", data=tmp_path / "a.csv", schema=tmp_path / "a.json")
    cfg = NodeConfig(source=src, superlink="x:1", ca_cert=tmp_path / "ca",
                     node_key=tmp_path / "k", port=1, split_validation=0.7)  # fmt: skip
    with pytest.raises(SchemaError, match="split-validation"):
        node_settings(cfg)


def test_an_unknown_key_is_refused() -> None:
    err = _refused({**BASE, "colour": "blue"}, "unknown setting 'colour'")
    assert "What to do" in err.diagnostics()


def test_a_typo_of_a_policy_key_is_refused_not_ignored() -> None:
    """``dp_only`` (the attribute's name) is not ``dp-only``: silently ignoring it would
    leave the node serving jobs without DP."""
    _refused({**BASE, "dp_only": "true"}, "unknown setting 'dp_only'")
    _refused({**BASE, "schema_file": "/p/x.json"}, "unknown setting 'schema_file'")


@pytest.mark.parametrize("key", ["partner", "data", "schema"])
def test_a_missing_name_data_or_schema_is_refused(key: str) -> None:
    _refused({k: v for k, v in BASE.items() if k != key}, f"missing setting '{key}'")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max-runs-per-day", "0"),
        ("max-runs-per-day", "ten"),
        ("max-runs-per-day", "2.5"),
        ("split-validation", "0.5"),
        ("split-test", "nan"),
        ("split-seed", "-1"),
        ("label-epsilon", "0"),
        ("label-epsilon", "inf"),
        ("dp-only", "yes"),
        ("dp-only", "1"),
        ("allow-plaintext-vertical", "1"),
        ("share-explanations", "on"),
        ("audit-db", ""),
        ("partner", ""),
    ],
)
def test_a_malformed_value_is_refused(key: str, value: str) -> None:
    _refused({**BASE, key: value}, f"setting '{key}'")


def test_flower_typed_node_config_values_are_read_as_text() -> None:
    """``flower-supernode --node-config "dp-only=true max-runs-per-day=2"`` parses values."""
    s = NodeSettings.parse({**BASE, "dp-only": True, "max-runs-per-day": 2, "split-test": 0.3})
    assert (s.dp_only, s.max_runs_per_day, s.split_test) == (True, 2, 0.3)
    assert s.as_config()["dp-only"] == "true" and s.as_config()["max-runs-per-day"] == "2"
    assert NodeSettings.parse({**BASE, "dp-only": "AUTO"}).as_config()["dp-only"] == "auto"


def test_helpers_read_the_parsed_values_and_refuse_malformed_ones() -> None:
    assert max_runs_per_day({}) == DEFAULT_MAX_RUNS_PER_DAY
    assert NodeOptions.of({"label-epsilon": "900"}).label_epsilon == 900.0
    with pytest.raises(SchemaError, match="max-runs-per-day"):
        max_runs_per_day({"max-runs-per-day": "0"})
    with pytest.raises(SchemaError, match="split-test"):
        node_split({"split-test": "a fifth"})


def test_a_simulation_entry_is_accepted(tmp_path: Path) -> None:
    """What `fedcollab run` lists per simulated partner (federation.simulation)."""
    entry = {
        **BASE,
        "audit-db": str(tmp_path / "audit.db"), "audit-key": str(tmp_path / "audit.key"),
        "coordinator-key": str(tmp_path / "c.pub"), "grant": str(tmp_path / "grant.json"),
        "peer-keys": str(tmp_path / "peers.json"),
        "split-validation": "0.1", "split-test": "0.2", "split-seed": "0",
    }  # fmt: skip
    local = {"sim-partners": json.dumps([{**BASE, "partner": "other"}, entry])}
    settings = partner_settings({"partition-id": 1, "num-partitions": 2}, local)
    assert settings.partner == "acme" and settings.grant == tmp_path / "grant.json"
    assert partner_config({"partition-id": 1}, local) == entry


@pytest.mark.parametrize(
    "local",
    [
        {},
        {"sim-partners": "not json"},
        {"sim-partners": json.dumps([BASE])},  # node 1 has no entry
        {"sim-partners": json.dumps(["acme", "brand-b"])},
        {"sim-partners": json.dumps([BASE, {**BASE, "dp_only": "true"}])},
    ],
)
def test_a_simulation_without_a_valid_entry_is_refused(local: dict[str, str]) -> None:
    with pytest.raises(SchemaError):
        partner_settings({"partition-id": 1}, local)


def test_a_real_node_never_reads_sim_partners() -> None:
    """A node config with any key but Flower's simulation numbering is the node's own,
    validated as it is: ``sim-partners`` (the coordinator's to write in a deployment)
    is never consulted, whatever it lists."""
    local = {"sim-partners": json.dumps([{**BASE, "data": "/coordinator/choice.csv"}])}
    assert partner_config(BASE, local) == BASE
    for node in ({}, {"partner": "acme"}, {"partition-id": 0, "partner": "acme"}):
        with pytest.raises(SchemaError):
            partner_settings(node, local)
