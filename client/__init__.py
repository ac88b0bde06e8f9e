"""fedcollab: client."""
