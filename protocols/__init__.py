"""fedcollab: protocols."""
