"""A simulated EAGLE fleet speaking the cloud-relay protocol (see eagle-protocols.md)."""
