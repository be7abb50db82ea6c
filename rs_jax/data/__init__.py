"""Data: a procedural scene world (images, captions, boxes, questions) and loaders of real formats."""
