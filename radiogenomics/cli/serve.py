"""`radiogenomics serve --model URI`: the token-protected REST API (docs/serving.md).

Tokens come from ``--tokens FILE`` or ``RADIOGENOMICS_TOKENS_FILE`` (neither, or a file that does not exist:
exit 2 with the fix ``radiogenomics token create``). ``--check`` loads everything, prints what would be
served and exits 0. ``--workers N > 1`` runs uvicorn with N processes, each building the app from the
``RADIOGENOMICS_*`` environment variables (:func:`radiogenomics.serving.api.app_from_environment`).
``--auth-fail-per-client``, ``--auth-fail-total`` and ``--auth-fail-window-s`` set the limits on requests
without a valid token (:mod:`radiogenomics.serving.auth_limit`; per worker process).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_AUDIT_DB = Path("radiogenomics-audit.sqlite")


def tokens_path(tokens: Path | None) -> Path:
    """``--tokens``, else ``RADIOGENOMICS_TOKENS_FILE``; InputError when neither names an existing file."""
    from radiogenomics.serving.api import ENV_TOKENS

    chosen = tokens or (Path(os.environ[ENV_TOKENS]) if os.environ.get(ENV_TOKENS) else None)
    if chosen is None:
        raise InputError("no tokens file: the API refuses anonymous requests",
                         fix="create one with `radiogenomics token create NAME --tokens tokens.yaml` and pass "
                             f"--tokens tokens.yaml (or set {ENV_TOKENS})")
    if not chosen.is_file():
        raise InputError("the tokens file does not exist", file=str(chosen),
                         fix=f"create it with `radiogenomics token create NAME --tokens {chosen}`")
    return chosen


def serve(
    model: str = typer.Option(..., "--model", help="MLflow model URI, e.g. models:/radiogenomics-prescriber@champion."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    tokens: Path | None = typer.Option(None, "--tokens", help="Tokens file (hashes only); default "
                                       "$RADIOGENOMICS_TOKENS_FILE."),
    features: Path | None = typer.Option(None, "--features", help="Feature table whose patients the page lists."),
    audit_db: Path = typer.Option(DEFAULT_AUDIT_DB, "--audit-db", help="Append-only SQLite audit log."),
    workers: int = typer.Option(1, "--workers", help="Server processes (>1: uvicorn workers)."),
    reload_interval_s: float = typer.Option(5.0, "--reload-interval-s", help="Seconds between alias checks."),
    check: bool = typer.Option(False, "--check", help="Load model and tokens, print what would be served, exit."),
    auth_fail_per_client: int = typer.Option(60, "--auth-fail-per-client", help="Requests without a valid token "
                                             "one client address may make per window before it gets 429."),
    auth_fail_total: int = typer.Option(1000, "--auth-fail-total", help="Requests without a valid token from all "
                                        "clients together per window before every further one gets 429."),
    auth_fail_window_s: float = typer.Option(60.0, "--auth-fail-window-s", help="Window of those limits, seconds "
                                             "(also: one aggregated audit row per client per window)."),
) -> None:
    """Serve prescriptions over a token-protected REST API (and the planner page at /)."""
    import uvicorn

    from radiogenomics.serving import api
    from radiogenomics.serving.auth_limit import AuthFailureLimits

    auth = AuthFailureLimits(per_client=auth_fail_per_client, total=auth_fail_total, window_s=auth_fail_window_s)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}", fix="use --workers 1 or more")
    if not 0 < port < 65536:
        raise InputError(f"--port must be in 1..65535, got {port}")
    if not reload_interval_s > 0:
        raise InputError(f"--reload-interval-s must be > 0, got {reload_interval_s}")
    tokens_file = tokens_path(tokens)
    if features is not None and not features.is_file():
        raise InputError("the feature table does not exist", file=str(features),
                         fix="give the Parquet file written by `radiogenomics extract`")
    environment = {api.ENV_MODEL: model, api.ENV_TOKENS: str(tokens_file.resolve()),
                   api.ENV_AUDIT: str(audit_db.resolve()), api.ENV_RELOAD: str(reload_interval_s),
                   api.ENV_FEATURES: str(features.resolve()) if features is not None else "",
                   api.ENV_AUTH_PER_CLIENT: str(auth.per_client), api.ENV_AUTH_TOTAL: str(auth.total),
                   api.ENV_AUTH_WINDOW: repr(float(auth.window_s))}
    if workers == 1 or check:
        app = api.create_app(model, tokens_file=tokens_file, audit_db=audit_db, features=features,
                             reload_interval_s=reload_interval_s, auth_failures=auth)
        if check:
            _print_check(app, host, port, tokens_file, audit_db, workers)
            return
        typer.echo(f"serving {model} on http://{host}:{port}/ (Ctrl+C stops)")
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    os.environ.update(environment)
    typer.echo(f"serving {model} on http://{host}:{port}/ with {workers} workers (Ctrl+C stops)")
    uvicorn.run("radiogenomics.serving.api:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="info")


def _print_check(app: object, host: str, port: int, tokens_file: Path, audit_db: Path, workers: int) -> None:
    """What ``serve`` would serve: the model version, the routes, the address, the files."""
    state = app.state  # type: ignore[attr-defined]
    loaded = state.serving.current()
    typer.echo(f"model    {loaded.info.name} version {loaded.info.version} "
               f"(alias {loaded.alias or '-'}; {loaded.info.uri})")
    typer.echo(f"tokens   {len(state.tokens.names)} in {tokens_file}")
    typer.echo(f"audit    {audit_db}")
    limits = state.auth_failures.limits
    typer.echo(f"auth     429 after {limits.per_client} requests without a valid token per client, "
               f"{limits.total} in all, per {limits.window_s:g} s")
    typer.echo(f"patients {len(state.features.rows)} from the feature table")
    for route in app.routes:  # type: ignore[attr-defined]
        methods = ",".join(sorted(set(getattr(route, "methods", None) or ["GET"]) - {"HEAD"}))
        path = f"{route.path}/*" if not hasattr(route, "methods") else route.path
        typer.echo(f"route    {methods:<5} {path}")
    typer.echo(f"address  http://{host}:{port}/ ({workers} worker{'s' if workers > 1 else ''}); "
               "--check: not started")
