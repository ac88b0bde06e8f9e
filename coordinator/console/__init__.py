"""The operator's web console: jobs, participants, budgets, insights and audit, by role.

Start it with ``fedcollab console start -w WORKSPACE`` (see ``docs/console.md``).
"""

from fedcollab.coordinator.console.app import create_app
from fedcollab.coordinator.console.settings import ConsoleConfig

__all__ = ["ConsoleConfig", "create_app"]
