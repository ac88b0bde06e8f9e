"""fedcollab: privacy."""
