"""fedcollab: what every party shares (errors, data contract, job specs, wire format)."""

__version__ = "0.1.0"
