"""genesis.llm."""
