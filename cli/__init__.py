"""fedcollab: cli."""
