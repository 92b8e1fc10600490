"""The research desk's own package: the plan model and the prompts of its three agents."""
