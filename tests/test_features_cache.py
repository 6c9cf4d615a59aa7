"""Content-addressed cache: keys change with any input byte, parameter or library version; atomic writes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from radiogenomics.features import cache as cache_mod
from radiogenomics.features.cache import FeatureCache, atomic_write_bytes, file_digest, item_key


def test_file_digest_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    d1 = file_digest(f)
    assert d1 == file_digest(f)
    f.write_bytes(b"hellp")  # same size, different byte
    assert file_digest(f) != d1
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    (series / "2.dcm").write_bytes(b"y")
    s1 = file_digest(series)
    (series / "2.dcm").write_bytes(b"z")
    assert file_digest(series) != s1
    (series / "3.dcm").write_bytes(b"w")
    assert file_digest(series) not in (s1,)


def test_item_key_depends_on_files_params_and_versions(tmp_path: Path) -> None:
    image, mask = tmp_path / "img", tmp_path / "mask"
    image.write_bytes(b"image")
    mask.write_bytes(b"mask")
    base = item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base == item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [image, mask], {"binWidth": 10}, ("numpy",))
    assert base != item_key("deep", [image, mask], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [mask, image], {"binWidth": 25}, ("numpy",))
    assert base != item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy", "scipy"))
    mask.write_bytes(b"mask2")
    assert base != item_key("radiomics", [image, mask], {"binWidth": 25}, ("numpy",))


def test_library_version_is_part_of_the_key(tmp_path: Path) -> None:
    versions = cache_mod.library_versions(("numpy", "not-a-real-package-xyz"))
    assert versions["not-a-real-package-xyz"] == "absent"
    assert versions["numpy"][0].isdigit()


def test_round_trip_keeps_non_finite_values(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "c")
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"x": 1.5, "nan": float("nan"), "inf": float("inf")})
    got = cache.get("ab" * 32)
    assert got is not None
    assert got["x"] == 1.5 and math.isnan(got["nan"]) and got["inf"] == math.inf
    assert cache.keys() == ["ab" * 32]
    assert len(cache) == 1


def test_corrupt_entry_reads_as_absent(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = "cd" * 32
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_text('{"features": {"x": 1.0')  # truncated JSON
    assert cache.get(key) is None


def test_atomic_write_never_leaves_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b"old complete content")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # the temporary file was removed
