"""fedcollab: coordinator."""
