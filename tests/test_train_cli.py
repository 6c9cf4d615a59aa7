"""`radiogenomics train`: nested CV of the candidates, MLflow tracking, registry aliases, then `predict`.

One small synthetic cohort (40 patients, 16^3 grid, original-image radiomics) is trained twice in one folder
with a tiny config and no MLFLOW_TRACKING_URI, so both runs and the `predict` subprocess use the default local
store ``./mlflow/mlflow.db`` of that folder. Then (fixture ``later``) a third run on a different cohort, a fourth
with toxicity disabled, and `radiogenomics promote`: promotion fails closed, the unit moves as one.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from radiogenomics.cli.app import main
from radiogenomics.training.registry import CHAMPION, PRESCRIBER_MODEL, RADIOSENSITIVITY_MODEL, TOXICITY_MODEL

N_PATIENTS, GRID, SEED = 40, 16, 11
CONFIG = """\
cv: {outer_folds: 2, inner_folds: 2}
search: {n_trials: 2}
tasks:
  radiosensitivity: {candidates: [ridge]}
  toxicity: {endpoints: [tox_xerostomia], candidates: [logistic, lkb_patient]}
"""
#: The later runs train only the registered tasks (outcome alpha and survival do not enter the registry).
LATER = """\
cv: {outer_folds: 2, inner_folds: 2}
search: {n_trials: 2}
tasks:
  radiosensitivity: {candidates: [ridge]}
  outcome_alpha: {enabled: false}
  toxicity: {enabled: %s, endpoints: [tox_xerostomia], candidates: [logistic, lkb_patient]}
  survival: {enabled: false}
"""
ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass
class Trained:
    folder: Path
    cohort: Path
    features: Path
    config: Path
    outputs: list[str]
    codes: list[int]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow' / 'mlflow.db'}"


def _run(args: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(args)
    return code, buffer.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("train-cli")
    cohort, features, config = folder / "cohort", folder / "features.parquet", folder / "train.yaml"
    generate_cohort(cohort, n_patients=N_PATIENTS, seed=SEED, grid_size=GRID, overwrite=True)
    extract(cohort, features, ExtractOptions(workers=1, cache_dir=folder / "cache", filters=("original",)))
    config.write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        mp.chdir(folder)
        runs = [_run(["train", str(cohort), "--features", str(features), "--config", str(config),
                      "--out", f"out{i}"]) for i in (1, 2)]
        yield Trained(folder, cohort, features, config, [r[1] for r in runs], [r[0] for r in runs])
    mlflow.set_tracking_uri(None)


def _client(trained: Trained) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=trained.uri, registry_uri=trained.uri)


def test_first_run_registers_three_champions(trained: Trained) -> None:
    assert trained.codes == [0, 0], trained.outputs
    client = _client(trained)
    for name in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL):
        first = client.get_model_version(name, "1")
        assert first.tags["promotion_decision"] == "first_champion"
        assert CHAMPION in (client.get_registered_model(name).aliases or {})
        # each model carries (and is judged on) its own held-out metrics; the prescriber all of them
        has_rsi, has_tox = name != TOXICITY_MODEL, name != RADIOSENSITIVITY_MODEL
        assert ("heldout.radiosensitivity.spearman" in first.tags) == has_rsi
        assert ("heldout.toxicity.xerostomia.auc" in first.tags) == has_tox
        if has_rsi:
            assert -1.0 <= float(first.tags["heldout.radiosensitivity.spearman"]) <= 1.0
    out = trained.outputs[0]
    for text in ("radiosensitivity", "ridge", "outcome_alpha", "toxicity.xerostomia", "logistic", "coxnet",
                 "champion", "mlflow ui --backend-store-uri", trained.uri):
        assert text in out, text


def test_second_run_is_a_challenger_with_a_logged_decision(trained: Trained) -> None:
    client = _client(trained)
    second = client.get_model_version(PRESCRIBER_MODEL, "2")
    # same data, same seeds: same evaluation digest, identical held-out metrics -> promoted over the champion
    assert second.tags["promotion_decision"] == "promoted"
    assert "within tolerance" in second.tags["promotion_reason"]
    first = client.get_model_version(PRESCRIBER_MODEL, "1")
    digests = {k: v for k, v in second.tags.items() if k.startswith("evaluation_digest")}
    assert set(digests) == {"evaluation_digest", "evaluation_digest.radiosensitivity",
                            "evaluation_digest.toxicity.xerostomia"}
    assert all(first.tags[k] == v for k, v in digests.items())
    assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHAMPION).version) == "2"
    run = client.get_run(second.run_id)
    assert run.data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == "promoted"
    assert run.data.tags["winner.radiosensitivity"] == "ridge"


def test_parent_run_tracks_folds_provenance_and_artifacts(trained: Trained) -> None:
    client = _client(trained)
    run = client.get_run(client.get_model_version(PRESCRIBER_MODEL, "1").run_id)
    history = client.get_metric_history(run.info.run_id, "radiosensitivity/ridge/spearman")
    assert sorted(m.step for m in history) == [0, 1]
    assert "radiogenomics.cohort_sha256" in run.data.tags and "version.mlflow" in run.data.tags
    assert run.inputs.dataset_inputs[0].dataset.name == "features"
    assert -1.0 <= run.data.metrics["radiosensitivity.spearman"] <= 1.0
    assert 0.0 <= run.data.metrics["toxicity.xerostomia.auc"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "toxicity.xerostomia/logistic")}
    assert {"toxicity.xerostomia/logistic/oof_predictions.csv", "toxicity.xerostomia/logistic/roc.png",
            "toxicity.xerostomia/logistic/calibration.png"} <= artifacts
    survival = {a.path for a in client.list_artifacts(run.info.run_id, "survival/coxnet")}
    assert "survival/coxnet/km_by_predicted_group.png" in survival
    trials = client.search_runs([run.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert trials and all("optuna.study" in t.data.tags for t in trials)
    # out-of-fold predictions on disk: every patient tested exactly once
    oof = pd.read_csv(next((trained.folder / "out1" / "runs").glob("*/oof/outcome_alpha__outcome_alpha.csv")))
    assert (oof["fold"] >= 0).all() and len(oof) == N_PATIENTS and (oof["alpha_per_gy"] > 0).all()


def test_predict_uses_the_default_store_and_the_champion(trained: Trained) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.run([sys.executable, "-m", "radiogenomics", "predict", str(trained.cohort), "--model",
                           f"models:/{PRESCRIBER_MODEL}@champion", "--out", "records.csv", "--workers", "1"],
                          cwd=trained.folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = pd.read_csv(trained.folder / "records.csv")
    assert len(records) == N_PATIENTS and records["recommended_total_dose_gy"].notna().any()


def test_unknown_config_key_is_exit_2_naming_it(trained: Trained, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cv: {outer_fold: 2}\n")
    code = main(["train", str(trained.cohort), "--features", str(trained.features), "--config", str(bad),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "cv.outer_fold" in err and err.strip().count("\n") == 0


def test_unknown_candidate_is_exit_2(trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: {toxicity: {candidates: [xgboost]}}\n")
    code = main(["train", str(trained.cohort), "--features", str(trained.features), "--config", str(bad),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "tasks.toxicity.candidates" in capsys.readouterr().err


def test_no_tox_labels_with_toxicity_enabled_is_exit_2(trained: Trained, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from radiogenomics.features.fusion import write_parquet
    from radiogenomics.features.schema import build_schema, read_feature_table

    table = read_feature_table(trained.features)
    table = table.drop(columns=[c for c in table.columns if c.startswith("outcome.tox_")])
    path = tmp_path / "no_tox.parquet"
    write_parquet(table, path, build_schema(table).to_metadata())
    code = main(["train", str(trained.cohort), "--features", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "outcome.tox_" in err and "tasks.toxicity" in err


def test_features_of_another_cohort_and_missing_cohort_are_exit_2(trained: Trained, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from radiogenomics.synthetic import generate_cohort

    small = tmp_path / "small"
    generate_cohort(small, n_patients=6, seed=SEED, grid_size=GRID, overwrite=True)
    code = main(["train", str(small), "--features", str(trained.features), "--out", str(tmp_path / "o")])
    assert code == 2 and "another cohort" in capsys.readouterr().err
    code = main(["train", str(tmp_path / "nope"), "--features", str(trained.features)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_survival_without_local_failure_event_is_exit_2(trained: Trained, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every patient censored: the Cox model cannot be fitted; `train` says so (exit 2), it does not crash."""
    from radiogenomics.features.fusion import write_parquet
    from radiogenomics.features.schema import read_feature_schema, read_feature_table

    table = read_feature_table(trained.features)
    table["outcome.lc_event"] = 0.0
    path = tmp_path / "censored.parquet"
    write_parquet(table, path, read_feature_schema(trained.features).to_metadata())
    config = tmp_path / "survival.yaml"
    config.write_text("cv: {outer_folds: 2, inner_folds: 2}\nsearch: {n_trials: 1}\n"
                      "tasks:\n  radiosensitivity: {enabled: false}\n  outcome_alpha: {enabled: false}\n"
                      "  toxicity: {enabled: false}\n  survival: {enabled: true}\n")
    code = main(["train", str(trained.cohort), "--features", str(path), "--config", str(config),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "local-failure event" in err and err.strip().count("\n") == 0
    # with a registrable task next to it, survival's failure is a note and the rest completes (exit 0)
    config.write_text(config.read_text().replace("radiosensitivity: {enabled: false}",
                                                 "radiosensitivity: {candidates: [ridge]}"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        code = main(["train", str(trained.cohort), "--features", str(path), "--config", str(config),
                     "--out", str(tmp_path / "o2")])
    mlflow.set_tracking_uri(None)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "survival: no candidate could be evaluated" in err and "local-failure event" in err


def test_multimodal_competes_and_the_interval_model_is_registered(trained: Trained, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """tasks.multimodal with fixed small-network params: it is cross-validated and tracked like the others; the
    registered radiosensitivity model is the best winner with conformal intervals (either model)."""
    config = tmp_path / "mm.yaml"
    config.write_text("cv: {outer_folds: 2, inner_folds: 2}\nsearch: {n_trials: 1}\n"
                      "tasks:\n  radiosensitivity: {candidates: [ridge]}\n  outcome_alpha: {enabled: false}\n"
                      "  toxicity: {enabled: false}\n  survival: {enabled: false}\n"
                      "  multimodal:\n    enabled: true\n    candidates: [multimodal]\n"
                      "    params: {multimodal: {epochs: 2, crop_size: 16, width: 4, hidden: 8, patience: 1,"
                      " augment: false, n_threads: 1}}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        code, out = _run(["train", str(trained.cohort), "--features", str(trained.features), "--config",
                          str(config), "--out", str(tmp_path / "o")])
    mlflow.set_tracking_uri(None)
    assert code == 0, capsys.readouterr().err
    assert "multimodal" in out and "ridge" in out
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("radiogenomics").experiment_id],
                             "tags.mlflow.parentRunId IS NULL")[0]
    assert "multimodal/multimodal/heldout.spearman" in run.data.metrics
    assert run.data.tags["winner.multimodal"] == "multimodal"
    table = pd.read_parquet(trained.features).drop(columns=[c for c in pd.read_parquet(trained.features).columns
                                                             if c.startswith("outcome.")])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        rsi = mlflow.pyfunc.load_model(f"models:/{RADIOSENSITIVITY_MODEL}@{CHAMPION}")
        pred = rsi.predict(table.head(3))
    mlflow.set_tracking_uri(None)
    assert (pred["rsi_lower"] <= pred["rsi"]).all() and (pred["rsi"] <= pred["rsi_upper"]).all()


def test_params_for_an_unlisted_candidate_or_unknown_parameter_is_exit_2(
        trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for text, expected in (("tasks: {toxicity: {candidates: [logistic], params: {lkb_patient: {lkb_alpha: 1}}}}",
                            "tasks.toxicity.params.lkb_patient"),
                           ("tasks: {toxicity: {candidates: [logistic], params: {logistic: {no_such: 1}}}}",
                            "no_such"),
                           # multimodal: network and wrapper parameters are routed by name; neither knows this
                           ("tasks: {radiosensitivity: {candidates: [multimodal], params: {multimodal: {bogus: 1}}}}",
                            "tasks.radiosensitivity.params.multimodal")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text + "\n")
        code = main(["train", str(trained.cohort), "--features", str(trained.features), "--config", str(bad),
                     "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, err


# ------------------------------------------------------------------------------------------------------------
# selection inside the nested loop, and promotion after the first two runs
# ------------------------------------------------------------------------------------------------------------

def test_registered_heldout_is_the_per_fold_selection(trained: Trained) -> None:
    """The registered toxicity metrics are those of the pooled outer predictions of the candidates chosen fold by
    fold on inner CV (selection.json), recomputed here from the per-candidate out-of-fold files."""
    import json

    from radiogenomics.training.metrics import classification_metrics

    client = _client(trained)
    version = client.get_model_version(TOXICITY_MODEL, "1")
    run = client.get_run(version.run_id)
    label = "toxicity.xerostomia"
    path = client.download_artifacts(run.info.run_id, f"{label}/selection/selection.json", str(trained.folder))
    record = json.loads(Path(path).read_text())
    assert record["candidates"] == ["logistic", "lkb_patient"]
    chosen = [f["chosen"] for f in record["folds"]]
    assert run.data.tags[f"selection.{label}"] == ",".join(f"{f['fold']}:{f['chosen']}" for f in record["folds"])
    assert run.data.tags[f"winner.{label}"] == record["final"]["chosen"]
    oof_dir = next((trained.folder / "out1" / "runs").glob(f"{run.info.run_id}/oof"))
    frames = {c: pd.read_csv(oof_dir / f"{label}__{c}.csv") for c in record["candidates"]}
    first = frames["logistic"]
    pred = first["y_pred"].copy()
    for index, candidate in enumerate(chosen):
        rows = first["fold"] == index
        pred[rows] = frames[candidate].loc[rows, "y_pred"]
    tested = first["fold"] >= 0
    expected = classification_metrics(first.loc[tested, "y_true"].astype(int), pred[tested])
    for metric in ("auc", "brier", "calibration_slope"):
        registered = float(version.tags[f"heldout.{label}.{metric}"])
        assert registered == pytest.approx(expected[metric], rel=1e-9), metric
        assert run.data.metrics[f"{label}/selection/heldout.{metric}"] == pytest.approx(registered, rel=1e-9)
    # per-candidate pooled outer metrics are still logged, for information
    assert {f"{label}/{c}/heldout.auc" for c in record["candidates"]} <= set(run.data.metrics)


@dataclass
class Later:
    codes: dict[str, int]
    outputs: dict[str, str]
    errors: dict[str, str]
    #: after each command: model -> version -> its tags (the promotion at the end rewrites some tags)
    tags: dict[str, dict[str, dict[str, dict[str, str]]]]
    #: after each command: model -> the version holding `champion`
    champions: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def later(trained: Trained) -> Iterator[Later]:
    """Run 3: a different cohort (40 other patients, another seed) -> version 3 of each model. Run 4: the first cohort
    with toxicity disabled -> radiosensitivity and prescriber version 4, no toxicity version 4. Then `promote`."""
    from radiogenomics.features.pipeline import ExtractOptions, extract
    from radiogenomics.synthetic import generate_cohort

    other, other_features = trained.folder / "other", trained.folder / "other.parquet"
    generate_cohort(other, n_patients=N_PATIENTS, seed=SEED + 1, grid_size=GRID, overwrite=True)
    extract(other, other_features, ExtractOptions(workers=1, cache_dir=trained.folder / "cache",
                                                  filters=("original",)))
    for enabled in ("true", "false"):
        (trained.folder / f"later-{enabled}.yaml").write_text(LATER % enabled)
    codes, outputs, errors, tags, champions = {}, {}, {}, {}, {}
    commands = {
        "other_cohort": ["train", str(other), "--features", str(other_features), "--config", "later-true.yaml",
                         "--out", "out3"],
        "no_toxicity": ["train", str(trained.cohort), "--features", str(trained.features), "--config",
                        "later-false.yaml", "--out", "out4"],
        "promote_incomplete": ["promote", PRESCRIBER_MODEL, "4", "--reason", "toxicity not needed"],
        "promote_missing": ["promote", PRESCRIBER_MODEL, "9", "--reason", "no such version"],
        "promote_no_reason": ["promote", PRESCRIBER_MODEL, "3", "--reason", "  "],
        "promote": ["promote", PRESCRIBER_MODEL, "3", "--reason", "external cohort reviewed by the tumour board",
                    "--by", "dr-lee"],
    }
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        mp.chdir(trained.folder)
        for key, args in commands.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                codes[key], outputs[key] = _run(args)
            errors[key] = err.getvalue()
            mlflow.set_tracking_uri(None)
            client = _client(trained)
            tags[key] = {name: {str(v.version): dict(client.get_model_version(name, v.version).tags)
                                for v in client.search_model_versions(f"name='{name}'")}
                         for name in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL)}
            champions[key] = {name: _aliases(client, name)[CHAMPION] for name in tags[key]}
    yield Later(codes, outputs, errors, tags, champions)


def _aliases(client: mlflow.MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in (client.get_registered_model(name).aliases or {}).items()}


def test_a_different_cohort_is_not_promoted(trained: Trained, later: Later) -> None:
    assert later.codes["other_cohort"] == 0, later.errors["other_cohort"]
    snapshot = later.tags["other_cohort"]
    for name in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL):
        third = snapshot[name]["3"]
        assert third["promotion_decision"] == "kept_champion", third
        assert "different evaluation data" in third["promotion_reason"]
        assert third["unit.radiogenomics-toxicity"] == "3"
        assert third["evaluation_digest"] != snapshot[name]["1"]["evaluation_digest"]
    reason = snapshot[PRESCRIBER_MODEL]["3"]["promotion_reason"]
    assert "different evaluation data for radiosensitivity" in reason
    assert "different evaluation data for toxicity.xerostomia" in reason
    assert "different evaluation data" in later.outputs["other_cohort"]


def test_a_disabled_task_registers_nothing_and_the_unit_stays_challenger(trained: Trained, later: Later) -> None:
    assert later.codes["no_toxicity"] == 0, later.errors["no_toxicity"]
    client = _client(trained)
    snapshot = later.tags["no_toxicity"]
    assert sorted(snapshot[TOXICITY_MODEL]) == ["1", "2", "3"]
    prescriber = client.get_model_version(PRESCRIBER_MODEL, "4")
    tags = snapshot[PRESCRIBER_MODEL]["4"]
    assert tags["promotion_decision"] == "kept_champion" and tags["endpoints"] == "[]"
    assert tags["unit.radiogenomics-toxicity"] == "none" and tags["unit.radiogenomics-radiosensitivity"] == "4"
    reason = tags["promotion_reason"]
    assert "does not serve the champion's toxicity endpoint(s) xerostomia" in reason
    assert "toxicity.xerostomia.auc" in reason and "radiogenomics-toxicity version" in reason
    rsi = snapshot[RADIOSENSITIVITY_MODEL]["4"]
    assert rsi["promotion_decision"] == "kept_champion" and rsi["promotion_reason"] == reason
    # the champion unit did not move (version 2 of each model), neither after the other cohort nor now
    assert later.champions["other_cohort"] == later.champions["no_toxicity"] == dict.fromkeys(snapshot, "2")
    run = client.get_run(prescriber.run_id)
    assert run.data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == "kept_champion"
    assert f"registry.{TOXICITY_MODEL}.version" not in run.data.tags
    assert "no toxicity model was trained" in later.errors["no_toxicity"]


def test_promote_moves_the_unit_and_records_who_and_why(trained: Trained, later: Later) -> None:
    for key in ("promote_incomplete", "promote_missing", "promote_no_reason"):
        assert later.codes[key] == 2, (key, later.errors[key])
        assert later.errors[key].strip().count("\n") == 0, later.errors[key]
    assert "incomplete" in later.errors["promote_incomplete"] and TOXICITY_MODEL in later.errors["promote_incomplete"]
    assert "has no version 9" in later.errors["promote_missing"]
    assert "reason" in later.errors["promote_no_reason"]
    assert later.codes["promote"] == 0, later.errors["promote"]
    client = _client(trained)
    for name in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL):
        assert _aliases(client, name)[CHAMPION] == "3", name
        assert "challenger" not in _aliases(client, name) or _aliases(client, name)["challenger"] != "3"
        tags = client.get_model_version(name, "3").tags
        assert tags["promotion_decision"] == "manual" and tags["promoted_by"] == "dr-lee"
        assert tags["promotion_reason"] == "external cohort reviewed by the tumour board"
        assert tags["promoted_over"] == "2" and tags["promoted_at"].endswith("+00:00")
        assert f"{name}: champion 2 -> 3" in later.outputs["promote"]
    # the refused promotions moved nothing; the accepted one moved the whole unit
    for key in ("promote_incomplete", "promote_missing", "promote_no_reason"):
        assert later.champions[key] == later.champions["no_toxicity"], key
    assert later.champions["promote"] == dict.fromkeys(later.champions["promote"], "3")
