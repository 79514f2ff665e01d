"""Readings gateways push to us (the EAGLE Uploader): body dialects, and writing them once."""
