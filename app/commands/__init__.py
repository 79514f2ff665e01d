"""The families of `rainforest` subcommands, each beside what it drives; app/cli.py puts them
together: processes (server, pinger, rotate, cartd), ops (status, logs, completeness, crawl),
users, tokens, carts (and compact), sim. common.py holds what they share."""
