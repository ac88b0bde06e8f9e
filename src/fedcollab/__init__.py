"""fedcollab: privacy-preserving federated collaboration for e-commerce partners.

The subpackages are the repository's top-level folders (``coordinator/``,
``client/``, ``federation/``, ``demo/``, ``protocols/``, ``privacy/``,
``compliance/``, ``common/``, ``cli/``), linked here so that they install and
import under one namespace, ``fedcollab.<folder>``, and never as generic top-level
names. See docs/architecture.md.
"""

from fedcollab.common import __version__

__all__ = ["__version__"]
