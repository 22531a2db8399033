"""genesis.cache."""
