"""Model-based RL: branched imagination in the world model and PPO on it."""
