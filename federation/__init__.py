"""fedcollab: code that runs both roles on one machine.

:mod:`~fedcollab.federation.simulation` runs the partner's ClientApp beside the
coordinator's ServerApp in Flower's simulation engine (``fedcollab run``);
:mod:`~fedcollab.federation.local_federation` starts a coordinator and partner
SuperNodes as processes on loopback (the demo, the integration tests, the
benchmarks). Only this package (and the layers above it) imports both ``client`` and
``coordinator``.

Layer: above ``client`` and ``coordinator``, below ``demo`` (docs/architecture.md).
"""
