"""genesis.server."""
