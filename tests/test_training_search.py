"""Optuna search: two worker processes share one sqlite study; budget, failures, resume and best params."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from radiogenomics.errors import InputError
from radiogenomics.training.search import best_params, open_storage, open_study, run_search

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from radiogenomics.training.search import open_study, run_search

    url, worker, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    study = open_study(url, "shared", direction="minimize", seed=5, worker=worker)
    (folder / f"ready{worker}").touch()  # start together, whatever each process's import time
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready*"))) < 2:
        if time.monotonic() > deadline:
            sys.exit("the other worker never opened the study")
        time.sleep(0.01)
    space = lambda t: {"x": t.suggest_float("x", -5.0, 5.0)}

    def evaluate(params):
        time.sleep(0.05)
        return (params["x"] - 2.0) ** 2

    mine = []
    run_search(study, space, evaluate, n_trials=16, on_trial=lambda done, note: mine.append(note), storage_url=url)
    print(len(mine))
""")


def _space(trial: optuna.Trial) -> dict:
    return {"x": trial.suggest_float("x", -5.0, 5.0), "fixed": "yes"}


def test_two_worker_processes_share_one_sqlite_study(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    procs = [subprocess.Popen([sys.executable, str(script), url, str(w), str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    per_worker = [int(out.strip().splitlines()[-1]) for out, _ in outputs]
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials()
    assert len(trials) == 16 and sum(per_worker) == 16
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(16))
    assert min(per_worker) >= 1  # both workers really took part


def test_budget_resume_and_best_params(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = open_study(url, "s", direction="minimize", seed=1)
    run_search(study, _space, lambda p: (p["x"] - 1.0) ** 2, n_trials=6)
    assert len(study.trials) == 6
    params = best_params(study, _space)
    assert params["fixed"] == "yes" and params["x"] == study.best_params["x"]
    again = open_study(url, "s", direction="minimize", seed=1)  # a re-run joins the study: budget already met
    calls: list[dict] = []
    run_search(again, _space, lambda p: calls.append(p) or 0.0, n_trials=6)
    assert calls == [] and len(again.trials) == 6
    run_search(again, _space, lambda p: 0.5, n_trials=8)  # a larger budget adds only the difference
    assert len(again.trials) == 8


def test_seeded_sampler_is_reproducible() -> None:
    def draws(seed: int) -> list[float]:
        study = open_study(None, "m", direction="minimize", seed=seed)
        run_search(study, _space, lambda p: p["x"] ** 2, n_trials=5)
        return [t.params["x"] for t in study.trials]

    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_failed_trials() -> None:
    study = open_study(None, "f", direction="maximize", seed=0)
    run_search(study, _space, lambda p: float("nan") if p["x"] < 0 else p["x"], n_trials=8)
    states = [t.state for t in study.trials]
    assert len(states) == 8 and TrialState.FAIL in states and TrialState.COMPLETE in states
    assert best_params(study, _space)["x"] >= 0

    def boom(params: dict) -> float:
        raise ZeroDivisionError("bug")

    crash = open_study(None, "c", direction="maximize", seed=0)
    with pytest.raises(ZeroDivisionError):
        run_search(crash, _space, boom, n_trials=3)
    assert [t.state for t in crash.trials] == [TrialState.FAIL]
    with pytest.raises(RuntimeError, match="no trial"):
        best_params(crash, _space)


def test_timeout_stops_the_search() -> None:
    study = open_study(None, "t", direction="minimize", seed=0)
    run_search(study, _space, lambda p: 1.0, n_trials=1000, timeout_s=1e-9)
    assert len(study.trials) <= 1


def test_bad_storage_url_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open the Optuna storage"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'o.db'}")


def test_budget_lock_is_exclusive_for_sqlite(tmp_path: Path) -> None:
    import fcntl

    from radiogenomics.training.search import budget_lock

    db = tmp_path / "o.db"
    with budget_lock(f"sqlite:///{db}"):
        with open(f"{db}.lock", "a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a second holder is refused while it is held
    with open(f"{db}.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released afterwards
        fcntl.flock(other, fcntl.LOCK_UN)
    with budget_lock(None), budget_lock("sqlite:///:memory:"):
        pass
