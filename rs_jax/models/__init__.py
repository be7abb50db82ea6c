"""Models: third-party model code (transformers / diffusers Flax classes) stays behind this package."""
