"""genesis.knowledge."""
