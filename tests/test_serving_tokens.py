"""API tokens: the file keeps only salted hashes (0600), verification, revocation without restart, the CLI."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from radiogenomics.cli.app import main
from radiogenomics.errors import InputError
from radiogenomics.serving.tokens import TokenStore, create_token, list_tokens, read_tokens, revoke_token


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_keeps_only_salted_hashes_with_mode_0600(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tokens{suffix}"
    first, second = create_token("alice", path), create_token("bob", path)
    text = path.read_text()
    assert first.startswith("rg_") and len(first) >= 40 and first != second
    assert first not in text and second not in text and first[3:20] not in text
    assert _mode(path) == 0o600
    entries = read_tokens(path)
    assert [e.name for e in entries] == ["alice", "bob"]
    assert len({e.salt for e in entries}) == 2 and all(len(e.salt) == 16 for e in entries)
    if suffix == ".json":
        assert json.loads(text)["format"] == "radiogenomics-tokens/1"
    assert [t["name"] for t in list_tokens(path)] == ["alice", "bob"]
    assert all(set(t) == {"name", "created_utc"} for t in list_tokens(path))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file


def test_verify_accepts_only_the_right_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    alice, bob = create_token("alice", path), create_token("bob", path)
    store = TokenStore(path)
    assert store.verify(alice) == "alice" and store.verify(bob) == "bob"
    wrong = alice[:-1] + ("A" if alice[-1] != "A" else "B")
    for bad in (wrong, "", None, "rg_", alice + "x", " " + alice, alice.upper(), "Bearer " + alice, "x" * 5000):
        assert store.verify(bad) is None, bad


def test_cache_makes_a_repeat_verification_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    token = create_token("alice", path)
    store = TokenStore(path)
    assert store.cached_name(token) is None  # never verified yet: no scrypt here
    start = time.perf_counter()
    assert store.verify(token) == "alice"
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(1000):
        assert store.verify(token) == "alice"
    repeat_s = (time.perf_counter() - start) / 1000
    assert repeat_s < 200e-6 and repeat_s < first_s / 20, (first_s, repeat_s)
    assert store.cached_name(token) == "alice" and store.cached_name(token + "x") is None


def test_revoke_and_new_tokens_take_effect_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    alice = create_token("alice", path)
    store = TokenStore(path)
    assert store.verify(alice) == "alice"  # now cached
    revoke_token("alice", path)
    assert store.cached_name(alice) is None and store.verify(alice) is None  # the cache went with the change
    bob = create_token("bob", path)
    assert store.verify(bob) == "bob"
    assert store.names == ["bob"]
    path.unlink()
    assert store.verify(bob) is None  # a file that disappears: fail closed
    with pytest.raises(InputError, match="no token named 'carol'"):
        revoke_token("carol", tmp_path / "other.yaml")


def test_bad_names_files_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    create_token("alice", path)
    with pytest.raises(InputError, match="already exists"):
        create_token("alice", path)
    for name in ("", "a b", "../x", "x" * 65, "-dash"):
        with pytest.raises(InputError, match="not valid"):
            create_token(name, path)
    with pytest.raises(InputError, match="does not exist"):
        TokenStore(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tokens: [{name: x, salt: zz}]\n")
    with pytest.raises(InputError, match="malformed") as info:
        TokenStore(broken)
    assert info.value.file == str(broken)
    broken.write_text("[1, 2\n")
    with pytest.raises(InputError, match="cannot be parsed"):
        read_tokens(broken)


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.yaml"
    assert main(["token", "create", "planner", "--tokens", str(path)]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert captured.out == token + "\n" and token.startswith("rg_")  # the token alone on stdout
    assert "only time" in captured.err and token not in captured.err
    assert TokenStore(path).verify(token) == "planner"
    assert main(["token", "create", "planner", "--tokens", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "already exists" in captured.err
    monkeypatch.setenv("RADIOGENOMICS_TOKENS_FILE", str(path))
    assert main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("planner\t") and token not in listing and "hash" not in listing
    assert main(["token", "revoke", "planner"]) == 0
    assert main(["token", "revoke", "planner"]) == 2
    assert read_tokens(path) == []
    assert main(["token", "list", "--tokens", str(tmp_path / "none.yaml")]) == 2


def test_rewrite_keeps_mode_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    old = os.umask(0o000)
    try:
        create_token("alice", path)
        path.chmod(0o644)
        create_token("bob", path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_concurrent_creates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    tokens: dict[str, str] = {}

    def create(i: int) -> None:
        tokens[f"user{i}"] = create_token(f"user{i}", path)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.name for e in read_tokens(path)) == sorted(tokens)
    store = TokenStore(path)
    assert all(store.verify(token) == name for name, token in tokens.items())


def test_an_absurd_scrypt_cost_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    create_token("alice", path)
    path.write_text(path.read_text().replace("n: 16384", "n: 1073741824"))
    with pytest.raises(InputError, match="unsupported kdf, cost"):
        TokenStore(path)
