"""fedcollab: experiments."""
