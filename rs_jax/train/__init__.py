"""The one trainer (``trainer``) and its learners: ``ppo``, ``reinforce`` (incl. self-critical)."""
