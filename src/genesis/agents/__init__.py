"""genesis.agents."""
