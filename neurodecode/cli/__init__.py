"""The ``neurodecode`` command line (typer), one module per group of commands.

User mistakes (bad options, missing files, unknown names, unwritable folders) are printed as
one line on stderr with exit status 2, never as a traceback; failed work (a file that could not
be ingested, an invalid store) exits with status 1.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as _click_errors

from .. import __version__
from ._common import UserError, console, fail

__all__ = ["UserError", "app"]


class _Group(typer.core.TyperGroup):
    """The root command group: user mistakes end in one line on stderr and exit status 2.

    Both the console script and ``typer.testing.CliRunner`` go through :meth:`main`, so tests
    see exactly what users see.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(
                args, "neurodecode", complete_var, standalone_mode=False, **extra
            )
        except _click_errors.NoArgsIsHelpError as err:
            console.print(err.ctx.get_help() if err.ctx else str(err), highlight=False)
            rv = 2
        except _click_errors.UsageError as err:
            path = err.ctx.command_path if err.ctx else "neurodecode"
            fail(f"{path}: {err.format_message()} (see {path} --help)")
            rv = 2
        except UserError as err:
            fail(str(err))
            rv = 2
        except _click_errors.ClickException as err:
            fail(err.format_message())
            rv = err.exit_code
        except typer.Exit as err:
            rv = err.exit_code
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted")
            rv = 130
        rv = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(rv)
        return rv


app = typer.Typer(
    cls=_Group,
    help="neurodecode: brain recordings in, decoded stimuli, behaviour and images out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"neurodecode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """neurodecode: brain recordings in, decoded stimuli, behaviour and images out."""


from . import (  # noqa: E402,F401
    adapt,
    catalog,
    ingest,
    plot,
    pretrain,
    readers,
    reconstruct,
    stores,
    workflow,
)
