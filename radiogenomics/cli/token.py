"""`radiogenomics token create | list | revoke`: API bearer tokens for `radiogenomics serve`.

`create` prints the new token once on stdout (nothing else; a hint goes to stderr); the tokens file keeps only
its salted scrypt hash (:mod:`radiogenomics.serving.tokens`). `--tokens` defaults to
``$RADIOGENOMICS_TOKENS_FILE``, the variable `serve` reads too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from radiogenomics.errors import InputError

token_app = typer.Typer(help="Manage API tokens (the tokens file keeps only salted hashes).", no_args_is_help=True)

_TOKENS_HELP = ("Tokens file (YAML, or JSON when it ends in .json); keeps only salted hashes. "
                "[env: RADIOGENOMICS_TOKENS_FILE]")


def _tokens_option() -> Any:
    return typer.Option(..., "--tokens", envvar="RADIOGENOMICS_TOKENS_FILE", show_envvar=False, help=_TOKENS_HELP)


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="Who the token is for (audit log name), e.g. planner-ward3."),
    tokens: Path = _tokens_option(),
) -> None:
    """Create a new API token, print it once, and store only its hash."""
    from radiogenomics.serving.tokens import create_token

    token = create_token(name, tokens)
    typer.echo(token)
    typer.echo(f"token {name!r} stored as a salted hash in {tokens}; this is the only time it is shown. "
               "Send it as `Authorization: Bearer <token>`.", err=True)


@token_app.command("list")
def token_list(tokens: Path = _tokens_option()) -> None:
    """List the token names and their creation times (never the hashes)."""
    from radiogenomics.serving.tokens import list_tokens

    if not tokens.exists():
        raise InputError("the tokens file does not exist", file=str(tokens),
                         fix=f"create one with `radiogenomics token create NAME --tokens {tokens}`")
    for entry in list_tokens(tokens):
        typer.echo(f"{entry['name']}\t{entry['created_utc']}")


@token_app.command("revoke")
def token_revoke(
    name: str = typer.Argument(..., help="Name of the token to remove."),
    tokens: Path = _tokens_option(),
) -> None:
    """Remove a token; a running server refuses it from its next request on."""
    from radiogenomics.serving.tokens import revoke_token

    revoke_token(name, tokens)
    typer.echo(f"revoked {name}", err=True)
