"""genesis.router."""
