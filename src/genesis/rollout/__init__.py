"""genesis.rollout."""
