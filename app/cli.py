"""The `rainforest` command: one entry point; each family of subcommands lives in app/commands/."""

from __future__ import annotations

import click

from app.commands import alerts, carts, erasure, ops, processes, sim, studies, tokens, users  # noqa: F401 (erasure adds to participants)

# `rainforest --help` as a table of contents: the families, in the order a newcomer meets them.
SECTIONS: list[tuple[str, list[click.Command]]] = [
    ("Processes (run them under supervisord or one per container)",
     [processes.server, processes.pinger, processes.rotate, processes.cartd]),
    ("Seeing how it runs",
     [ops.status, alerts.alerts, ops.logs_cmd, ops.completeness, ops.crawl_cmd, ops.rescue_cmd]),
    ("Devices and access", [users.users, tokens.tokens, processes.secret_key]),
    ("Studies", [studies.studies, studies.participants]),  # withdraw, erasure-report: app.commands.erasure
    ("Research data", [carts.carts, carts.compact]),
    ("Trying it out", [sim.sim]),
]  # fmt: skip


class TableOfContents(click.Group):
    """A group whose help lists its commands by section rather than alphabetically."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, commands in SECTIONS:
            rows = [(c.name or "", c.get_short_help_str(limit=90)) for c in commands]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=TableOfContents, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Rainforest Logger: poll EAGLE gateways every few seconds and keep every reading.

    Settings come from the environment and a .env file (docs/configuration.md). Each command's
    --help ends with an example; docs/ has a page per topic.

    Example: rainforest status
    """


for _, _commands in SECTIONS:
    for _command in _commands:
        main.add_command(_command)


if __name__ == "__main__":
    main()
