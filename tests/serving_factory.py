"""A registered prescriber, a tokens file and the API app for the serving tests.

The registry (sqlite MLflow store) is built once per pytest session under pytest's base temp folder and
shared by the test modules that only read it (the API and schemathesis tests); tests that move an alias
register their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prescriber_factory import Bundle, register_bundle, use_tracking_uri

MODEL = "models:/radiogenomics-prescriber@champion"


def tracking_uri(folder: Path) -> str:
    """The sqlite tracking URI of a registry folder."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def shared_registry(bundle: Bundle, base: Path) -> tuple[Path, str]:
    """(registry folder, prescriber version) registered once per session under ``base``."""
    folder = base / "serving-registry"
    marker = folder / "prescriber-version.txt"
    if not marker.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with use_tracking_uri(tracking_uri(folder)):
            marker.write_text(register_bundle(bundle, folder, experiment="serving"))
    return folder, marker.read_text()


def new_token(folder: Path, name: str = "planner") -> tuple[Path, str]:
    """(tokens file, plaintext token) of a fresh tokens file in ``folder``."""
    from radiogenomics.serving.tokens import create_token

    tokens = folder / "tokens.yaml"
    return tokens, create_token(name, tokens)


def features_only(bundle: Bundle) -> Any:
    """The bundle's feature table without outcome columns (what a planner sends)."""
    return bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")])
