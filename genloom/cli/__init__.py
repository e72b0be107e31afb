"""The `genloom` command: thin doors into the library, one module per group of commands (loaded when used).

Bad input: one line on stderr (`genloom: error: ...`), exit code 2.
"""

from __future__ import annotations

import sys

import click

from genloom.cli.base import cli
from genloom.errors import GenloomError

__all__ = ["cli", "main"]


def main(argv=None) -> None:
    try:
        rc = cli.main(args=argv, prog_name="genloom", standalone_mode=False)
    except click.ClickException as e:
        msg = e.format_message().replace("\n", " ")
        click.echo(f"genloom: error: {msg}", err=True)
        sys.exit(2)
    except GenloomError as e:
        click.echo(f"genloom: error: {e}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("genloom: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("genloom: interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
