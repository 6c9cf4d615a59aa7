"""`radiogenomics cache prune`: age and size limits on the feature cache, least recently used first."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from radiogenomics.cli.app import main
from radiogenomics.features.cache import FeatureCache, prune

DAY_S = 86400.0


def _entry(cache: FeatureCache, key: str, n_features: int, age_days: float, now: float) -> Path:
    cache.put(key, {f"f{i}": float(i) for i in range(n_features)})
    path = cache.path(key)
    os.utime(path, (now - age_days * DAY_S, now - age_days * DAY_S))
    return path


def _filled(root: Path, now: float) -> dict[str, Path]:
    """Five entries of 1.6 kB, last used 1, 5, 10, 40 and 100 days ago, and a stale temporary file."""
    cache = FeatureCache(root)
    paths = {f"{age:03d}": _entry(cache, f"{age:03d}" + "a" * 61, 120, age, now) for age in (1, 5, 10, 40, 100)}
    tmp = root / "ab" / ".abc.json.x.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"partial")
    os.utime(tmp, (now - 2 * DAY_S, now - 2 * DAY_S))
    paths["tmp"] = tmp
    return paths


def test_older_than_removes_entries_not_used_for_that_long(tmp_path: Path) -> None:
    now = time.time()
    paths = _filled(tmp_path / "c", now)
    report = prune(tmp_path / "c", older_than_days=30, now=now)
    assert sorted(e.path.name[:3] for e in report.removed if not e.temporary) == ["040", "100"]
    assert not paths["040"].exists() and not paths["100"].exists() and not paths["tmp"].exists()
    assert all(paths[k].exists() for k in ("001", "005", "010"))
    assert report.n_before == 5 and report.n_after == 3
    assert report.size_after_bytes == sum(paths[k].stat().st_size for k in ("001", "005", "010"))


def test_max_size_removes_least_recently_used_first_and_a_hit_counts_as_use(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "c"
    paths = _filled(root, now)
    size = paths["001"].stat().st_size
    assert FeatureCache(root).get("100" + "a" * 61) is not None  # a hit: now the most recently used entry
    report = prune(root, max_size_bytes=2 * size + size // 2, now=time.time())
    kept = sorted(k for k in ("001", "005", "010", "040", "100") if paths[k].exists())
    assert kept == ["001", "100"]
    assert report.size_after_bytes <= 2 * size + size // 2


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    now = time.time()
    paths = _filled(tmp_path / "c", now)
    report = prune(tmp_path / "c", older_than_days=0, dry_run=True, now=now)
    assert len(report.removed) == 6 and report.n_after == 0 and report.size_after_bytes == 0
    assert all(p.exists() for p in paths.values())


def test_cli_prints_what_it_removed_and_the_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    root = tmp_path / "c"
    paths = _filled(root, now)
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would remove") == 4 and "dry run" in out and all(p.exists() for p in paths.values())
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "7", "--max-size", "0.000002"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["removed"] * 5  # 3 old + stale tmp, then the LRU one
    assert "days ago" in lines[0]
    assert lines[-1].startswith(f"cache {root}: 5 entries, ") and lines[-1].endswith("-> 1 entry, 1.6 kB")
    assert [k for k in ("001", "005", "010", "040", "100") if paths[k].exists()] == ["001"]


def test_default_cache_dir_is_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "env-cache"
    monkeypatch.setenv("RADIOGENOMICS_CACHE_DIR", str(root))
    _filled(root, time.time())
    assert main(["cache", "prune", "--older-than", "0"]) == 0
    assert f"cache {root}: 5 entries" in capsys.readouterr().out
    assert FeatureCache(root).keys() == []


@pytest.mark.parametrize("args", [["--older-than", "-1"], ["--max-size", "-0.5"], ["--max-size", "nan"],
                                  ["--older-than", "soon"]])
def test_bad_options_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str]) -> None:
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and args[0] in err


def test_cache_dir_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    assert main(["cache", "prune", "--cache-dir", str(file), "--max-size", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(file) in err and "is a file" in err
    assert file.read_text() == "x"


def test_missing_cache_dir_is_nothing_to_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "none"), "--max-size", "1"]) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()
