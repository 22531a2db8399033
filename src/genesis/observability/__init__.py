"""genesis.observability."""
