"""TrainConfig: the shipped default file equals TrainConfig(), and bad files name the key and the type."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radiogenomics.errors import InputError
from radiogenomics.training.config import DEFAULT_CONFIG_PATH, TrainConfig, load_train_config, parse_train_config


def test_default_file_equals_defaults() -> None:
    assert load_train_config(DEFAULT_CONFIG_PATH) == TrainConfig()
    assert load_train_config(None) == TrainConfig()
    cfg = TrainConfig()
    assert (cfg.cv.outer_folds, cfg.cv.inner_folds, cfg.cv.stratify_by) == (5, 3, "clinical.center")
    assert cfg.cv.leave_one_centre_out is False
    assert cfg.tasks.multimodal.enabled is False and cfg.tasks.toxicity.endpoints is None
    assert cfg.registry.tolerance["spearman"] == 0.02 and cfg.registry.coverage_band == (0.85, 0.95)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = parse_train_config({"seed": 3, "cv": {"outer_folds": 4}, "search": {"n_trials": 7, "timeout_s": 60},
                              "tasks": {"toxicity": {"endpoints": ["tox_xerostomia"]}}})
    path = tmp_path / "train.yaml"
    path.write_text(cfg.to_yaml())
    again = load_train_config(path)
    assert again == cfg
    assert again.search.timeout_s == 60.0 and again.tasks.toxicity.endpoints == ["tox_xerostomia"]
    assert again.cv.inner_folds == 3  # untouched keys keep their defaults


def test_partial_file_overrides_only_named_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("cv:\n  leave_one_centre_out: true\nsearch:\n  storage: postgresql://u@db/optuna\n")
    cfg = load_train_config(path)
    assert cfg.cv.leave_one_centre_out is True and cfg.cv.outer_folds == 5
    assert cfg.search.storage_url(tmp_path) == "postgresql://u@db/optuna"


@pytest.mark.parametrize(("data", "expected"), [
    ({"cv": {"outer_fold": 3}}, "unknown key cv.outer_fold"),
    ({"tasks": {"toxicity": {"endpoint": ["x"]}}}, "unknown key tasks.toxicity.endpoint"),
    ({"trackng": {}}, "unknown key trackng"),
    ({"cv": {"outer_folds": "five"}}, "cv.outer_folds: Input should be a valid integer (got str 'five')"),
    ({"seed": True}, "seed: Input should be a valid integer (got bool True)"),
    ({"search": {"timeout_s": "long"}}, "search.timeout_s: Input should be a valid number"),
    ({"tasks": {"toxicity": {"endpoints": "tox_x"}}}, "tasks.toxicity.endpoints: Input should be a valid list"),
    ({"cv": {"outer_folds": 1}}, "cv.outer_folds: Input should be greater than or equal to 2"),
    ({"registry": {"coverage_band": [0.95, 0.85]}}, "registry.coverage_band: must be [low, high]"),
    ({"search": {"storage": "optuna.db"}}, "search.storage: must be an RDB URL"),
    ({"cv": {"leave_one_centre_out": True, "stratify_by": None}}, "leave_one_centre_out needs cv.stratify_by"),
])
def test_bad_config_names_key_and_type(tmp_path: Path, data: dict, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as info:
        load_train_config(path)
    assert expected in str(info.value)
    assert info.value.file == str(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read training config"):
        load_train_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cv: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_train_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must be a mapping"):
        load_train_config(bad)


def test_storage_and_tracking_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig()
    assert cfg.search.storage_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    assert cfg.search.storage_url(None) is None
    assert cfg.sampler_seed == cfg.seed
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cfg.tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    assert cfg.tracking.artifact_location(tmp_path) == (tmp_path.resolve() / "mlflow" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert cfg.tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    assert cfg.tracking.artifact_location(tmp_path) is None


def test_toxicity_endpoints_default_to_every_tox_column() -> None:
    columns = ["patient_id", "outcome.tox_xerostomia", "outcome.tox_dysphagia", "outcome.lc_event", "dose.x"]
    assert TrainConfig().tasks.toxicity.resolve_endpoints(columns) == ["tox_dysphagia", "tox_xerostomia"]
    chosen = parse_train_config({"tasks": {"toxicity": {"endpoints": ["tox_xerostomia"]}}})
    assert chosen.tasks.toxicity.resolve_endpoints(columns) == ["tox_xerostomia"]
    wrong = parse_train_config({"tasks": {"toxicity": {"endpoints": ["tox_mucositis"]}}})
    with pytest.raises(InputError, match="tox_mucositis"):
        wrong.tasks.toxicity.resolve_endpoints(columns)


def test_a_task_section_without_candidates_keeps_the_default_candidates() -> None:
    from radiogenomics.training.config import parse_train_config

    config = parse_train_config({"tasks": {"survival": {"enabled": True}, "multimodal": {"enabled": True},
                                           "toxicity": {"endpoints": ["tox_xerostomia"]}}})
    assert config.tasks.survival.candidates == ["coxnet"]
    assert config.tasks.multimodal.candidates == ["multimodal"] and config.tasks.multimodal.enabled
    assert config.tasks.toxicity.candidates == ["logistic", "lkb_patient"]
    assert parse_train_config({"tasks": {"survival": {"candidates": []}}}).tasks.survival.candidates == []
