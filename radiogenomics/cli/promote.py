"""`radiogenomics promote MODEL_NAME VERSION --reason TEXT [--by NAME]`: a person makes a unit champion.

The three registered models move as one unit (docs/registry.md, "Champion and challenger"): promoting any
member makes the radiosensitivity, toxicity and prescriber versions registered with it ``champion`` together.
Who (``--by``, default the OS user), why and when are recorded in every member's version tags
(``promotion_decision: manual``, ``promotion_reason``, ``promoted_by``, ``promoted_at``, ``promoted_over``).
Refused (exit 2, one line, nothing moves) when the version does not exist, its unit is incomplete, or the reason
is empty. The library behind it is :func:`radiogenomics.training.registry.promotion.promote_unit`.
"""

from __future__ import annotations

import getpass

import typer


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "unknown"


def promote(
    model_name: str = typer.Argument(..., help="Registered model, e.g. radiogenomics-prescriber."),
    version: str = typer.Argument(..., help="Its version whose unit becomes champion."),
    reason: str = typer.Option(..., "--reason", help="Why this unit should be champion (recorded in the tags)."),
    by: str | None = typer.Option(None, "--by", help="Who decides (default: the OS user)."),
) -> None:
    """Make a registered version's unit (its radiosensitivity, toxicity and prescriber versions) champion."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    from radiogenomics.training.config import TrackingConfig
    from radiogenomics.training.registry.promotion import promote_unit

    if not is_tracking_uri_set():  # neither MLFLOW_TRACKING_URI nor set_tracking_uri: the store `train` uses
        mlflow.set_tracking_uri(TrackingConfig().tracking_uri())
    who = by if by is not None else _os_user()
    moves = promote_unit(mlflow.MlflowClient(), model_name, version, reason=reason, by=who)
    for move in moves:
        typer.echo(move.describe())
    typer.echo(f"recorded in the version tags: promoted by {who.strip()}: {' '.join(reason.split())}")
