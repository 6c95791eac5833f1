"""The terminal app\x27s widgets, one per module."""
