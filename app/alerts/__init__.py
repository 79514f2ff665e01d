"""Alerts: outages opened and resolved from the health states, fleet-wide incidents, and the
notifications that tell people (e-mail, webhooks, chat, a daily digest)."""
