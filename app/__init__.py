"""Rainforest Logger: poll fleets of Rainforest EAGLE gateways and keep every reading."""

__version__ = "0.1.0"
