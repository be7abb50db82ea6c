"""One module per paper experiment, run as ``python -m tasks.<name>``."""
