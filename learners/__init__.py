"""Ray learner actors: the policy learner group (PPO) and the world-model learner."""
