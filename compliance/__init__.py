"""fedcollab: compliance."""
