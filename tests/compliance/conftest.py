"""Fixtures shared by the compliance tests."""

from tests.support.report_world import world  # noqa: F401  (the signed log of the report tests)
