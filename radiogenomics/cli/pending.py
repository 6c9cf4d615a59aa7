"""Commands of the contract (§3) whose implementation lands with later issues.

They are registered now so `--help` documents the final interface; running one says which part of
the platform is not in this release yet and exits 1 (an unavailable capability, not bad input).
"""

from __future__ import annotations

from pathlib import Path

import typer

from radiogenomics.cli.console import fail_line


def _unavailable(command: str, capability: str) -> None:
    fail_line(f"`radiogenomics {command}` needs the {capability}, which is not in this release yet.")
    raise typer.Exit(1)


def serve(
    model: str = typer.Option(..., "--model", help="MLflow model URI."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    tokens: Path | None = typer.Option(None, "--tokens", help="Tokens file (hashes only)."),
) -> None:
    """Serve prescriptions over a token-protected REST API."""
    _unavailable("serve", "serving package (serving/)")


token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="Who the token is for."),
    tokens: Path = typer.Option(..., "--tokens", help="Tokens file; keeps only the token's hash."),
) -> None:
    """Create a new API token, print it once, and store only its hash."""
    _unavailable("token create", "serving package (serving/)")
