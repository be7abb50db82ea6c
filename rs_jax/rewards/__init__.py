"""Reward functions: each returns a vector of reward components that learners weight."""
