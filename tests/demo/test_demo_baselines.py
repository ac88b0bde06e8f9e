"""The baselines the demo judges the federation against, on the demo's own partners."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcollab.client.partner_data import PartnerData
from fedcollab.demo import baselines
from fedcollab.demo.horizontal import default_jobs, prepare_partners


@pytest.fixture(scope="module")
def partners(tmp_path_factory: pytest.TempPathFactory) -> list[PartnerData]:
    sources = prepare_partners(tmp_path_factory.mktemp("brands"))
    spec = default_jobs(sources[0].schema)[0]
    return baselines.load_all(sources[:3], spec)


def test_pooled_rows_beat_one_partner_alone_on_the_same_model(
    partners: list[PartnerData], tmp_path: Path
) -> None:
    spec = default_jobs(prepare_partners(tmp_path / "p")[0].schema)[0]
    pooled = baselines.train_centralized(partners, spec, max_epochs=3)
    alone = baselines.train_alone(partners[0], spec, max_epochs=3)
    assert pooled.n_train == sum(len(d.train) for d in partners)
    assert pooled.n_test == sum(len(d.test) for d in partners)
    assert alone.n_train == len(partners[0].train) < pooled.n_train
    # Logistic regression on Online Shoppers: well above chance with pooled rows.
    assert pooled.test_auc is not None and pooled.test_auc > 0.8
    assert alone.test_auc is None or 0.0 <= alone.test_auc <= 1.0
