"""genesis.testing."""
