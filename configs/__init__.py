"""One config per task, ``configs/<task>.py``, with presets (``cpu`` default, ``paper`` for a GPU)."""
