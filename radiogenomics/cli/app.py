"""The `radiogenomics` command line (Typer + rich).

Exit status: 0 success, 2 bad input (one-line reason on stderr), 1 internal error.
Each command lives in its own module under `radiogenomics.cli` and is registered here.
"""

from __future__ import annotations

import logging
import sys

import typer

from radiogenomics import __version__
from radiogenomics.cli import adapt as adapt_cmd
from radiogenomics.cli import cache as cache_cmd
from radiogenomics.cli import demo as demo_cmd
from radiogenomics.cli import extract as extract_cmd
from radiogenomics.cli import handoff as handoff_cmd
from radiogenomics.cli import logs
from radiogenomics.cli import plan as plan_cmd
from radiogenomics.cli import predict as predict_cmd
from radiogenomics.cli import promote as promote_cmd
from radiogenomics.cli import report as report_cmd
from radiogenomics.cli import serve as serve_cmd
from radiogenomics.cli import synth as synth_cmd
from radiogenomics.cli import token as token_cmd
from radiogenomics.cli import train as train_cmd
from radiogenomics.cli import validate as validate_cmd
from radiogenomics.cli.console import fail_line
from radiogenomics.errors import InputError
from radiogenomics.outputs import path_error

app = typer.Typer(
    name="radiogenomics",
    help="Personalised radiotherapy: cohort -> features -> models -> per-patient radiobiology -> dose targets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radiogenomics {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Details on stderr: our DEBUG log, the libraries' "
                                 "log records and warnings (default: our warnings and errors only)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    logs.configure(verbose)


app.command("synth")(synth_cmd.synth)
app.command("validate")(validate_cmd.validate)
app.command("extract")(extract_cmd.extract)
app.command("train")(train_cmd.train)
app.command("predict")(predict_cmd.predict)
app.command("promote")(promote_cmd.promote)
app.command("handoff")(handoff_cmd.handoff)
app.command("plan")(plan_cmd.plan)
app.command("adapt")(adapt_cmd.adapt)
app.command("serve")(serve_cmd.serve)
app.add_typer(token_cmd.token_app, name="token")
app.add_typer(cache_cmd.cache_app, name="cache")
app.command("demo")(demo_cmd.demo)
app.command("report")(report_cmd.report)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; maps exceptions to the contract's exit codes."""
    try:
        # In non-standalone mode click returns the exit code of typer.Exit instead of raising it.
        result = app(args=argv, standalone_mode=False)
    except InputError as exc:
        fail_line(str(exc))
        return 2
    except OSError as exc:
        # A path the user gave that cannot be read or written is bad input (exit 2), not an internal error.
        reason = path_error(exc)
        if reason is None:
            logging.getLogger("radiogenomics").exception("internal error")
            fail_line(f"internal error: {type(exc).__name__}: {exc}")
            return 1
        fail_line(str(reason))
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        fail_line("aborted")
        return 1
    except Exception as exc:
        # Typer vendors click; its usage errors (exit_code 2) and other CLI errors carry `show`/`exit_code`.
        exit_code = getattr(exc, "exit_code", None)
        if isinstance(exit_code, int) and hasattr(exc, "format_message"):
            fail_line(f"{exc.format_message()} (see --help)")
            return exit_code
        logging.getLogger("radiogenomics").exception("internal error")
        fail_line(f"internal error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        logs.restore()  # in-process callers (tests, notebooks) get their logging back
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
