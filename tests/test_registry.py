"""Registry: promotion rule (fails closed; the unit moves as one), champion/challenger aliases, tags, signatures,
and loading in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from prescriber_factory import Bundle, use_tracking_uri

from radiogenomics.training.config import RegistryConfig, TrainConfig
from radiogenomics.training.registry import (
    CHALLENGER,
    CHAMPION,
    FIRST_CHAMPION,
    KEPT_CHAMPION,
    PRESCRIBER_MODEL,
    PROMOTED,
    RADIOSENSITIVITY_MODEL,
    TOXICITY_MODEL,
    Evaluation,
    metric_direction,
    own_metrics,
    promotion_decision,
    register_models,
    unit_promotion_decision,
)

CONFIG = RegistryConfig(tolerance={"spearman": 0.02, "auc": 0.02, "brier": 0.01}, coverage_band=(0.85, 0.95))
CHAMPION_METRICS = {"radiosensitivity.spearman": 0.60, "radiosensitivity.mae": 0.08,
                    "radiosensitivity.coverage": 0.90, "toxicity.xerostomia.auc": 0.75,
                    "toxicity.xerostomia.brier": 0.18}
DIGESTS = {"radiosensitivity": "a" * 64, "toxicity.xerostomia": "b" * 64}


def evaluation(metrics: dict[str, float] | None = None, digests: dict[str, str] | None = None,
               endpoints: tuple[str, ...] = ("xerostomia",)) -> Evaluation:
    """A prescriber-like evaluation: the champion's metrics, digests and endpoints unless given."""
    return Evaluation(CHAMPION_METRICS if metrics is None else metrics, DIGESTS if digests is None else digests,
                      endpoints)


def test_metric_direction() -> None:
    assert metric_direction("radiosensitivity.spearman") == "higher"
    assert metric_direction("toxicity.xerostomia.auc") == "higher"
    assert metric_direction("mae") == "lower"
    assert metric_direction("toxicity.dysphagia.brier") == "lower"
    assert metric_direction("radiosensitivity.coverage") == "band"
    assert metric_direction("toxicity.xerostomia.calibration_slope") == "target"  # distance from 1
    assert metric_direction("toxicity.xerostomia.calibration_intercept") == "target"  # distance from 0
    assert metric_direction("n_patients") is None


@pytest.mark.parametrize(("change", "decision"), [
    ({}, PROMOTED),
    ({"radiosensitivity.spearman": 0.59}, PROMOTED),  # within tolerance 0.02
    ({"radiosensitivity.spearman": 0.55}, KEPT_CHAMPION),  # higher is better: 0.05 worse
    ({"toxicity.xerostomia.brier": 0.185}, PROMOTED),  # lower is better, within 0.01
    ({"toxicity.xerostomia.brier": 0.20}, KEPT_CHAMPION),
    ({"toxicity.xerostomia.brier": 0.10, "toxicity.xerostomia.auc": 0.90}, PROMOTED),  # better on both
    ({"radiosensitivity.mae": 0.0801}, KEPT_CHAMPION),  # no tolerance configured for mae: any worsening
    ({"radiosensitivity.coverage": 0.93}, PROMOTED),  # inside the band counts as good as 0.90
    ({"radiosensitivity.coverage": 0.80}, KEPT_CHAMPION),  # left the band
    ({"radiosensitivity.spearman": float("nan")}, KEPT_CHAMPION),
])
def test_promotion_decision(change: dict[str, float], decision: str) -> None:
    result = promotion_decision(evaluation({**CHAMPION_METRICS, **change}), evaluation(), CONFIG)
    assert result.decision == decision
    if decision == KEPT_CHAMPION:
        assert next(iter(change)) in result.reason and "worse" in result.reason
    assert promotion_decision(evaluation(), None, CONFIG).decision == FIRST_CHAMPION


def test_different_evaluation_data_is_never_promoted() -> None:
    """Better metrics on another cohort (another digest) are not comparable: not promoted, the reason says so."""
    better = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.9, "toxicity.xerostomia.auc": 0.95}
    result = promotion_decision(evaluation(better, {**DIGESTS, "radiosensitivity": "c" * 64}), evaluation(), CONFIG)
    assert result.decision == KEPT_CHAMPION
    assert "different evaluation data for radiosensitivity" in result.reason
    assert "toxicity.xerostomia" not in result.reason  # that task's data are the same
    worse = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.1}
    other = promotion_decision(evaluation(worse, {**DIGESTS, "radiosensitivity": "c" * 64}), evaluation(), CONFIG)
    assert "radiosensitivity.spearman" not in other.reason  # metrics of other data are not compared
    # a champion without any digest (registered before digests) cannot be compared automatically either
    unknown = promotion_decision(evaluation(better), evaluation(digests={}), CONFIG)
    assert unknown.decision == KEPT_CHAMPION and "evaluation data are unknown" in unknown.reason
    # nor a challenger that was not evaluated on one of the champion's tasks
    partial = promotion_decision(evaluation(better, {"radiosensitivity": "a" * 64}), evaluation(), CONFIG)
    assert partial.decision == KEPT_CHAMPION and "not evaluated on toxicity.xerostomia" in partial.reason


def test_a_missing_metric_is_never_promoted() -> None:
    """Fewer metrics than the champion is not 'nothing in common -> promoted'."""
    rsi_only = {k: v for k, v in CHAMPION_METRICS.items() if k.startswith("radiosensitivity.")}
    result = promotion_decision(evaluation(rsi_only), evaluation(), CONFIG)
    assert result.decision == KEPT_CHAMPION
    assert "lacks the champion's held-out metric(s) toxicity.xerostomia.auc, toxicity.xerostomia.brier" in \
        result.reason
    nothing = promotion_decision(evaluation({}), evaluation(), CONFIG)
    assert nothing.decision == KEPT_CHAMPION and not nothing.promoted
    # neither side has a comparable metric: fails closed too
    none_comparable = promotion_decision(evaluation({}), evaluation({}), CONFIG)
    assert none_comparable.decision == KEPT_CHAMPION and "no held-out metric can be compared" in none_comparable.reason


def test_a_missing_endpoint_is_never_promoted() -> None:
    """A prescriber without the champion's xerostomia endpoint is not promoted, even with every metric better."""
    better = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.9}
    result = promotion_decision(evaluation(better, endpoints=()), evaluation(), CONFIG)
    assert result.decision == KEPT_CHAMPION
    assert "does not serve the champion's toxicity endpoint(s) xerostomia" in result.reason
    # an extra endpoint is fine
    more = promotion_decision(evaluation(endpoints=("dysphagia", "xerostomia")), evaluation(), CONFIG)
    assert more.decision == PROMOTED


@pytest.mark.parametrize(("new", "old", "decision"), [
    (0.2, 0.95, KEPT_CHAMPION),   # far from 1: worse, although numerically "lower"
    (0.95, 0.2, PROMOTED),
    (1.05, 0.95, PROMOTED),       # as far from 1 as 0.95
    (1.3, 0.95, KEPT_CHAMPION),   # 0.3 from 1 vs 0.05: too moderate
    (0.9, 0.95, PROMOTED),        # within the configured tolerance 0.1 of the distance
])
def test_calibration_slope_is_judged_by_its_distance_from_one(new: float, old: float, decision: str) -> None:
    config = RegistryConfig(tolerance={**CONFIG.tolerance, "calibration_slope": 0.1})
    name = "toxicity.xerostomia.calibration_slope"
    result = promotion_decision(evaluation({**CHAMPION_METRICS, name: new}),
                                evaluation({**CHAMPION_METRICS, name: old}), config)
    assert result.decision == decision, result.reason
    if decision == KEPT_CHAMPION:
        assert name in result.reason and "distance from 1" in result.reason
    # the intercept by its distance from 0
    intercept = "toxicity.xerostomia.calibration_intercept"
    assert promotion_decision(evaluation({**CHAMPION_METRICS, intercept: -0.5}),
                              evaluation({**CHAMPION_METRICS, intercept: 0.1}), CONFIG).decision == KEPT_CHAMPION


def _unit(rsi: dict[str, float], tox: dict[str, float], *, tox_registered: bool = True) -> dict[str, Evaluation]:
    out = {RADIOSENSITIVITY_MODEL: Evaluation(rsi, {"radiosensitivity": DIGESTS["radiosensitivity"]}),
           PRESCRIBER_MODEL: Evaluation({**rsi, **tox}, DIGESTS if tox else {"radiosensitivity": "a" * 64},
                                        ("xerostomia",) if tox else ())}
    if tox_registered:
        out[TOXICITY_MODEL] = Evaluation(tox, {"toxicity.xerostomia": DIGESTS["toxicity.xerostomia"]},
                                         ("xerostomia",))
    return out


def test_the_unit_moves_together() -> None:
    rsi = {k: v for k, v in CHAMPION_METRICS.items() if k.startswith("radiosensitivity.")}
    tox = {k: v for k, v in CHAMPION_METRICS.items() if k.startswith("toxicity.")}
    champions: dict[str, Evaluation | None] = dict(_unit(rsi, tox))
    first = unit_promotion_decision(_unit(rsi, tox), dict.fromkeys(champions), CONFIG)
    assert first.promoted and {d.decision for d in first.decisions.values()} == {FIRST_CHAMPION}
    same = unit_promotion_decision(_unit(rsi, tox), champions, CONFIG)
    assert same.promoted and {d.decision for d in same.decisions.values()} == {PROMOTED}
    # a better toxicity model with a worse RSI model: nothing moves, every member gives the same reason
    worse_rsi = {**rsi, "radiosensitivity.spearman": 0.40}
    better_tox = {**tox, "toxicity.xerostomia.auc": 0.95}
    mixed = unit_promotion_decision(_unit(worse_rsi, better_tox), champions, CONFIG)
    assert not mixed.promoted
    assert {name: d.decision for name, d in mixed.decisions.items()} == dict.fromkeys(champions, KEPT_CHAMPION)
    assert len({d.reason for d in mixed.decisions.values()}) == 1
    assert mixed.reason.count("radiosensitivity.spearman") == 1  # one clause, not one per member
    # toxicity not trained: no toxicity member; the unit cannot replace a champion unit that has one
    no_tox = unit_promotion_decision(_unit(rsi, {}, tox_registered=False), champions, CONFIG)
    assert not no_tox.promoted and set(no_tox.decisions) == {RADIOSENSITIVITY_MODEL, PRESCRIBER_MODEL}
    assert f"the unit has no {TOXICITY_MODEL} version" in no_tox.reason
    assert "does not serve the champion's toxicity endpoint(s) xerostomia" in no_tox.reason
    assert "toxicity.xerostomia.auc" in no_tox.reason
    # the first unit ever may lack toxicity; a later one with toxicity then brings its first version
    champions_without_tox = {**dict(_unit(rsi, {}, tox_registered=False)), TOXICITY_MODEL: None}
    with_tox = unit_promotion_decision(_unit(rsi, tox), champions_without_tox, CONFIG)
    assert with_tox.promoted and with_tox.decisions[TOXICITY_MODEL].decision == FIRST_CHAMPION
    assert with_tox.decisions[PRESCRIBER_MODEL].decision == PROMOTED


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with use_tracking_uri(uri):
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().create_experiment(
            "registry-test", artifact_location=(folder / "artifacts").as_uri()))
        yield uri


@pytest.fixture(scope="module")
def registrations(bundle: Bundle, store: str) -> list:
    """Three registrations: the first, a worse one (kept as challenger), a better one (promoted)."""
    worse = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.40}
    better = {**CHAMPION_METRICS, "radiosensitivity.spearman": 0.70, "toxicity.xerostomia.brier": 0.15}
    out = []
    for metrics in (CHAMPION_METRICS, worse, better):
        out.append(register_models(bundle.radiosensitivity, bundle.toxicity, metrics, bundle.schema, TrainConfig(),
                                   training_table=bundle.table, experiment_name="registry-test",
                                   evaluation_digests=DIGESTS))
    return out


def test_champion_and_challenger(registrations: list, store: str) -> None:
    first, worse, better = registrations
    client = mlflow.MlflowClient()
    for name in (PRESCRIBER_MODEL, RADIOSENSITIVITY_MODEL, TOXICITY_MODEL):
        assert first.versions[name].decision.decision == FIRST_CHAMPION
        # the unit moves as one: only the RSI got worse, and the toxicity model stays challenger with it
        assert worse.versions[name].decision.decision == KEPT_CHAMPION
        assert worse.versions[name].aliases == (CHALLENGER,)
        assert better.versions[name].decision.decision == PROMOTED
        assert [first.versions[name].version, worse.versions[name].version, better.versions[name].version] == \
            ["1", "2", "3"]
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_model_version_by_alias(name, CHALLENGER)  # the promoted challenger left the alias
    assert worse.versions[PRESCRIBER_MODEL].aliases == (CHALLENGER,)
    # the decision and its reason in the version's tags and the run's tags
    kept = client.get_model_version(PRESCRIBER_MODEL, "2")
    assert kept.tags["promotion_decision"] == KEPT_CHAMPION
    assert "radiosensitivity.spearman" in kept.tags["promotion_reason"]
    assert float(kept.tags["heldout.radiosensitivity.spearman"]) == pytest.approx(0.40)
    # evaluation digests, endpoints and the unit in the versions' tags
    assert kept.tags["evaluation_digest.toxicity.xerostomia"] == DIGESTS["toxicity.xerostomia"]
    assert json.loads(kept.tags["endpoints"]) == ["xerostomia"]
    for name in (PRESCRIBER_MODEL, RADIOSENSITIVITY_MODEL, TOXICITY_MODEL):
        tags = client.get_model_version(name, "2").tags
        assert {k: v for k, v in tags.items() if k.startswith("unit.")} == {
            f"unit.{m}": "2" for m in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL, PRESCRIBER_MODEL)}
        assert tags["promotion_reason"] == kept.tags["promotion_reason"]
    rsi_tags = client.get_model_version(RADIOSENSITIVITY_MODEL, "2").tags
    assert set(k for k in rsi_tags if k.startswith("evaluation_digest.")) == {"evaluation_digest.radiosensitivity"}
    run = client.get_run(worse.run_id)
    assert run.data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == KEPT_CHAMPION
    assert "not promoted" in run.data.tags[f"registry.{PRESCRIBER_MODEL}.reason"]
    assert client.get_run(better.run_id).data.tags[f"registry.{PRESCRIBER_MODEL}.decision"] == PROMOTED


def test_each_model_is_judged_on_its_own_metrics(registrations: list, store: str) -> None:
    metrics = {"radiosensitivity.spearman": 0.5, "toxicity.xerostomia.auc": 0.7}
    assert own_metrics(RADIOSENSITIVITY_MODEL, metrics) == {"radiosensitivity.spearman": 0.5}
    assert own_metrics(TOXICITY_MODEL, metrics) == {"toxicity.xerostomia.auc": 0.7}
    assert own_metrics(PRESCRIBER_MODEL, metrics) == metrics
    client = mlflow.MlflowClient()
    tags = client.get_model_version(TOXICITY_MODEL, "2").tags
    assert not any(k.startswith("heldout.radiosensitivity.") for k in tags)
    assert "heldout.toxicity.xerostomia.auc" in tags
    assert "evaluation_digest.radiosensitivity" not in tags and "evaluation_digest.toxicity.xerostomia" in tags


def test_toxicity_pyfunc_takes_the_prescription_param(bundle: Bundle, registrations: list, store: str) -> None:
    """The signature declares ``prescription_gy`` (else MLflow drops it with a warning and every dose gives the
    delivered plan's probability)."""
    model = mlflow.pyfunc.load_model(f"models:/{TOXICITY_MODEL}@{CHAMPION}")
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(4)
    delivered = model.predict(features)["xerostomia_grade_ge2"].to_numpy()
    at_90 = model.predict(features, params={"prescription_gy": 90.0})["xerostomia_grade_ge2"].to_numpy()
    expected = bundle.toxicity["xerostomia"].predict_proba_at_dose(bundle.table.head(4), prescription_gy=90.0)[:, 1]
    np.testing.assert_allclose(at_90, expected, rtol=1e-9)
    assert not np.allclose(at_90, delivered)
    # and n_fractions (declared too): 90 Gy in 25 fractions of 3.6 Gy, on the models' EQD2 scale
    in_25 = model.predict(features, params={"prescription_gy": 90.0, "n_fractions": 25.0})["xerostomia_grade_ge2"]
    expected = bundle.toxicity["xerostomia"].predict_proba_at_dose(bundle.table.head(4), prescription_gy=90.0,
                                                                   n_fractions=25.0)[:, 1]
    np.testing.assert_allclose(in_25.to_numpy(), expected, rtol=1e-9)
    assert (in_25.to_numpy() >= at_90).all() and not np.allclose(in_25.to_numpy(), at_90)


def test_challenger_alias_while_champion_kept(bundle: Bundle, registrations: list, store: str) -> None:
    worse = {**CHAMPION_METRICS, "toxicity.xerostomia.auc": 0.60}
    result = register_models(bundle.radiosensitivity, bundle.toxicity, worse, bundle.schema, CONFIG,
                             training_table=bundle.table, experiment_name="registry-test", evaluation_digests=DIGESTS)
    client = mlflow.MlflowClient()
    assert result.decision.decision == KEPT_CHAMPION and "toxicity.xerostomia.auc" in result.decision.reason
    assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHALLENGER).version) == "4"
    assert str(client.get_model_version_by_alias(PRESCRIBER_MODEL, CHAMPION).version) == "3"


def test_signature_and_requirements(registrations: list, store: str) -> None:
    info = mlflow.models.get_model_info(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
    # no input schema: MLflow would drop undeclared columns (a misspelt genomic.RSI, the gate's dose.* input)
    # before the model sees them; the models check their input themselves
    assert info.signature.inputs is None
    assert {p.name for p in info.signature.params.params} == {"n_fractions", "dose_per_fraction_gy", "target_gard"}
    outputs = [c.name for c in info.signature.outputs.inputs]
    assert outputs[:4] == ["patient_id", "model_name", "model_version", "model_uri"]
    path = mlflow.artifacts.download_artifacts(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
    requirements = (Path(path) / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("radiogenomics==") for r in requirements)
    torch = [r for r in requirements if r.startswith("torch")]
    assert torch and all(r.endswith("+cpu") for r in torch)
    assert any("download.pytorch.org/whl/cpu" in r for r in requirements)


FRESH = """
import json, sys
import mlflow, pandas as pd
features = pd.read_parquet(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/radiogenomics-prescriber@champion")
out = model.predict(features)
rsi = mlflow.pyfunc.load_model("models:/radiogenomics-radiosensitivity@champion").predict(features)
tox = mlflow.pyfunc.load_model("models:/radiogenomics-toxicity@champion").predict(features)
print(json.dumps({"records": out.to_dict(orient="records"), "rsi": rsi["rsi"].tolist(),
                  "tox": tox.columns.tolist()}, default=str))
"""


def test_the_pyfunc_refuses_a_misspelt_column_and_keeps_gate_input(bundle: Bundle, registrations: list,
                                                                   store: str) -> None:
    from radiogenomics.errors import InputError

    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(1)
    model = mlflow.pyfunc.load_model(f"models:/{PRESCRIBER_MODEL}@{CHAMPION}")
    with pytest.raises(InputError, match=r"genomic\.RSI \(did you mean genomic\.rsi\?\)"):
        model.predict(features.rename(columns={"genomic.rsi": "genomic.RSI"}))
    planned = float(features["clinical.total_dose_gy"].iloc[0])
    record = model.predict(features.assign(**{"genomic.rsi": 0.6, "dose.spinal_cord.max_gy": 0.82 * planned}))
    assert "oar_limited" in record["flags"].iloc[0]
    for name in (RADIOSENSITIVITY_MODEL, TOXICITY_MODEL):
        with pytest.raises(InputError, match="genomic.RSI"):
            mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}").predict(
                features.rename(columns={"genomic.rsi": "genomic.RSI"}))


def test_load_champion_in_a_fresh_process(bundle: Bundle, registrations: list, store: str, tmp_path: Path) -> None:
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(3)
    features.to_parquet(tmp_path / "features.parquet")
    env = {"MLFLOW_TRACKING_URI": store, "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "features.parquet")], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    records = result["records"]
    assert [r["patient_id"] for r in records] == features["patient_id"].tolist()
    for record in records:
        assert record["model_name"] == PRESCRIBER_MODEL
        assert record["model_version"] == "3"  # the champion, found from the loaded model's id
        assert record["model_uri"] == f"models:/{PRESCRIBER_MODEL}/3"
        assert 60.0 <= record["recommended_total_dose_gy"] <= 80.0
        assert "xerostomia_grade_ge2" in record["toxicity"]
    # same records as the in-process prescriber (same version, same inputs -> same hash)
    from radiogenomics.models.prescriber import ModelInfo, Prescriber

    local = Prescriber.from_training(bundle.table, bundle.schema, bundle.radiosensitivity, bundle.toxicity)
    expected = local.predict_records(features, model=ModelInfo(PRESCRIBER_MODEL, "3", f"models:/{PRESCRIBER_MODEL}/3"))
    assert [r["input_sha256"] for r in records] == [r["input_sha256"] for r in expected]
    assert result["rsi"] == pytest.approx(list(bundle.radiosensitivity.predict(local.prepare(features)[0])))
    assert result["tox"] == ["xerostomia_grade_ge2"]


def test_pyfunc_regimen_columns_and_params(registrations: list, store: str, bundle: Bundle) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{PRESCRIBER_MODEL}/1")
    features = bundle.table.drop(columns=[c for c in bundle.table.columns if c.startswith("outcome.")]).head(2)
    out = model.predict(features.assign(n_fractions=30, dose_per_fraction_gy=2.2))
    assert isinstance(out, pd.DataFrame) and out["model_version"].tolist() == ["1", "1"]
    assert out["n_fractions"].tolist() == [30.0, 30.0] and out["dose_per_fraction_gy"].tolist() == [2.2, 2.2]
    out = model.predict(features, params={"target_gard": 40.0})
    assert out["target_gard"].tolist() == [40.0, 40.0]
