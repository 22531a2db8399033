"""genesis.rag."""
