"""genesis.memory."""
