"""Agent episodes: the model acts in its own sandbox workspace, step by step, until it submits."""
