"""API bearer tokens: create, list, revoke, verify. The tokens file never holds a token.

A token is ``rg_`` + ``secrets.token_urlsafe(32)`` (256 random bits). The file (YAML, or JSON when its name
ends in ``.json``) keeps per token: ``name``, ``created_utc``, a 16-byte random ``salt`` and the scrypt hash of
the token (``hashlib.scrypt``, N = 2^14, r = 8, p = 1: the interactive-login parameters of Percival, "Stronger
key derivation via sequential memory-hard functions", BSDCan 2009; stored per token so they can be raised
later), plus ``lookup``: the first 12 hex digits of the token's plain SHA-256. ``lookup`` lets
:meth:`TokenStore.verify` run scrypt only against the entry the token can belong to, so a wrong token costs one
SHA-256, never one scrypt per stored token (no denial of service by guessing); 48 bits of a hash of a
256-bit random secret reveal nothing usable about it.

The file is written atomically (a temporary file in the same folder, ``fsync``, ``os.replace``) with mode
0600, under an exclusive lock (``.<file name>.lock`` beside it) so concurrent commands cannot lose a change.
:class:`TokenStore` re-reads it when it changes (a new token works, a revoked one stops working, without a
restart) and caches successful verifications in memory, keyed by the token's SHA-256, so a request costs
microseconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from radiogenomics.errors import InputError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "rg_"
FILE_FORMAT = "radiogenomics-tokens/1"
#: scrypt cost (Percival 2009, interactive logins: N = 2^14, r = 8, p = 1; about 16 MiB and 50-100 ms here).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
LOOKUP_HEX = 12
ENV_TOKENS_FILE = "RADIOGENOMICS_TOKENS_FILE"
_NEVER = (-1, -1, -1)  # the stamp before the first read
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_FIX_CREATE = "create one with `radiogenomics token create NAME --tokens {path}`"


@dataclass(frozen=True)
class TokenEntry:
    """One stored token: its name, creation time and salted hash (never the token)."""

    name: str
    created_utc: str
    salt: bytes
    hash: bytes
    lookup: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def as_dict(self) -> dict[str, Any]:
        """The entry as stored in the file (bytes as hex)."""
        return {"name": self.name, "created_utc": self.created_utc, "kdf": "scrypt",
                "n": self.n, "r": self.r, "p": self.p, "salt": self.salt.hex(), "hash": self.hash.hex(),
                "lookup": self.lookup}

    def matches(self, token: str) -> bool:
        """Whether ``token`` hashes to this entry (scrypt, constant-time comparison)."""
        derived = _scrypt(token, self.salt, self.n, self.r, self.p)
        return hmac.compare_digest(derived, self.hash)


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024,
                          dklen=HASH_BYTES)


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _lookup(token: str) -> str:
    return _sha256(token).hex()[:LOOKUP_HEX]


def _entry(raw: Any, path: Path, index: int) -> TokenEntry:
    fix = f"repair or re-create {path} (`radiogenomics token create`)"
    if not isinstance(raw, dict):
        raise InputError(f"token entry {index} is not a mapping", file=str(path), fix=fix)
    try:
        entry = TokenEntry(name=str(raw["name"]), created_utc=str(raw["created_utc"]),
                           salt=bytes.fromhex(str(raw["salt"])), hash=bytes.fromhex(str(raw["hash"])),
                           lookup=str(raw["lookup"]), n=int(raw.get("n", SCRYPT_N)), r=int(raw.get("r", SCRYPT_R)),
                           p=int(raw.get("p", SCRYPT_P)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"token entry {index} is malformed ({type(exc).__name__}: {exc})", file=str(path),
                         fix=fix) from None
    cost_ok = 2**10 <= entry.n <= 2**20 and entry.n & (entry.n - 1) == 0 and 1 <= entry.r <= 32 and 1 <= entry.p <= 16
    if (raw.get("kdf", "scrypt") != "scrypt" or not cost_ok or len(entry.salt) < SALT_BYTES
            or len(entry.hash) != HASH_BYTES):
        raise InputError(f"token entry {index} ({entry.name}) has an unsupported kdf, cost, salt or hash",
                         file=str(path), fix=fix)
    return entry


def read_tokens(tokens_file: Path) -> list[TokenEntry]:
    """The entries of a tokens file; [] when it does not exist. InputError when it is malformed."""
    path = Path(tokens_file)
    if not path.exists():
        return []
    if not path.is_file():
        raise InputError("the tokens file is not a file", file=str(path), fix="give a file path to --tokens")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("tokens file %s is readable by others (mode %o); run chmod 600 on it", path, mode)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"the tokens file cannot be parsed ({type(exc).__name__})", file=str(path),
                         fix=f"repair it, or move it away and {_FIX_CREATE.format(path=path)}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
        raise InputError("the tokens file must be a mapping with a `tokens` list", file=str(path),
                         fix=f"move it away and {_FIX_CREATE.format(path=path)}")
    return [_entry(raw, path, i) for i, raw in enumerate(data.get("tokens") or [])]


def _write_tokens(tokens_file: Path, entries: list[TokenEntry]) -> None:
    """Write the file atomically with mode 0600 (temporary file in the same folder, fsync, rename)."""
    path = Path(tokens_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FILE_FORMAT, "tokens": [e.as_dict() for e in entries]}
    if path.suffix.lower() == ".json":
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = ("# radiogenomics API tokens: salted scrypt hashes only (docs/serving.md#tokens).\n"
                + yaml.safe_dump(document, sort_keys=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"token name {name!r} is not valid",
                         fix="use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit "
                             "(e.g. planner-ward3)")
    return name


@contextmanager
def _locked(tokens_file: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the file (``.<name>.lock`` beside it), so two ``token``
    commands at once cannot lose each other's change."""
    path = Path(tokens_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def create_token(name: str, tokens_file: Path) -> str:
    """Add a token named ``name`` to ``tokens_file`` (created if absent) and return the token, once.

    The file keeps only the name, creation time, salt and scrypt hash. A name already in the file is an
    InputError (revoke it first).
    """
    _check_name(name)
    path = Path(tokens_file)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    salt = secrets.token_bytes(SALT_BYTES)
    entry = TokenEntry(name=name, created_utc=datetime.now(UTC).isoformat(timespec="seconds"), salt=salt,
                       hash=_scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P), lookup=_lookup(token))
    with _locked(path):
        entries = read_tokens(path)
        if any(e.name == name for e in entries):
            raise InputError(f"a token named {name!r} already exists", file=str(path),
                             fix=f"choose another name, or revoke it first: radiogenomics token revoke {name} "
                                 f"--tokens {path}")
        _write_tokens(path, [*entries, entry])
    log.info("created token %s in %s", name, path)
    return token


def list_tokens(tokens_file: Path) -> list[dict[str, str]]:
    """``[{"name", "created_utc"}]`` of the tokens in the file (never hashes)."""
    return [{"name": e.name, "created_utc": e.created_utc} for e in read_tokens(Path(tokens_file))]


def revoke_token(name: str, tokens_file: Path) -> None:
    """Remove the token named ``name``; InputError when there is none. A running server drops it on its next
    request (:class:`TokenStore` re-reads the file when it changes)."""
    path = Path(tokens_file)
    with _locked(path):
        entries = read_tokens(path)
        kept = [e for e in entries if e.name != name]
        if len(kept) == len(entries):
            known = ", ".join(e.name for e in entries) or "none"
            raise InputError(f"no token named {name!r} (tokens: {known})", file=str(path),
                             fix=f"see `radiogenomics token list --tokens {path}`")
        _write_tokens(path, kept)
    log.info("revoked token %s in %s", name, path)


@dataclass(frozen=True)
class _Loaded:
    """One version of the file: entries by ``lookup`` and the tokens verified against them (SHA-256 -> name)."""

    by_lookup: dict[str, list[TokenEntry]]
    verified: dict[bytes, str]


class TokenStore:
    """Verifies bearer tokens against a tokens file; thread-safe.

    The file must exist and parse when the store is created (InputError otherwise: a server without tokens
    would refuse every request). Each :meth:`verify` stats the file and re-reads it when its modification time,
    size or inode changed, dropping the verification cache; a file that disappears later means no valid
    token (fail closed, with a warning).
    """

    def __init__(self, tokens_file: Path) -> None:
        self.path = Path(tokens_file)
        if not self.path.is_file():
            raise InputError("the tokens file does not exist", file=str(self.path),
                             fix=_FIX_CREATE.format(path=self.path))
        read_tokens(self.path)  # a malformed file stops the start-up (later, it refuses every token)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = _NEVER
        self._state = _Loaded({}, {})
        self._refresh()
        if not self._state.by_lookup:
            log.warning("tokens file %s holds no token: every authenticated request will be refused", self.path)

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            entries: list[TokenEntry] = []
            if stamp is None:
                log.warning("tokens file %s is gone: refusing every token until it is back", self.path)
            else:
                try:
                    entries = read_tokens(self.path)
                except (InputError, OSError) as exc:
                    log.error("tokens file %s cannot be read (%s): refusing every token", self.path, exc)
            by_lookup: dict[str, list[TokenEntry]] = {}
            for entry in entries:
                by_lookup.setdefault(entry.lookup, []).append(entry)
            self._state, self._stamp = _Loaded(by_lookup, {}), stamp  # one atomic swap: entries + empty cache
            log.info("tokens file %s loaded: %d token(s)", self.path, len(entries))

    @property
    def names(self) -> list[str]:
        """Names of the tokens currently loaded."""
        self._refresh()
        return sorted(e.name for group in self._state.by_lookup.values() for e in group)

    def cached_name(self, token: str | None) -> str | None:
        """The token's name if it was verified before against the current file, else None (then call
        :meth:`verify`). Never runs scrypt, so an async server can call it on its event loop and hand only
        cache misses to a thread."""
        if not token or not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        self._refresh()
        return self._state.verified.get(_sha256(token))

    def verify(self, token: str | None) -> str | None:
        """The name of the token, or None when it is empty, unknown or revoked.

        Cached tokens cost one SHA-256 and a dict look-up; a new token one SHA-256 and one scrypt of the
        entry its ``lookup`` selects (constant-time comparison, ``hmac.compare_digest``).
        """
        if not token or not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        self._refresh()
        state = self._state
        digest = _sha256(token)
        name = state.verified.get(digest)
        if name is not None:
            return name
        for entry in state.by_lookup.get(digest.hex()[:LOOKUP_HEX], []):
            if entry.matches(token):
                state.verified[digest] = entry.name  # cached for this version of the file only
                return entry.name
        return None
