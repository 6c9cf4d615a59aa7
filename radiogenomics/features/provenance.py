"""Which of the package's own files a result depends on, and their digest (part of the cache keys).

The item cache keys cover the input files, the parameters and the library versions; this module adds the
package's own code and data, so that editing a signature YAML, the gEUD table or the RTSTRUCT rasteriser
recomputes what depends on it, and only that.

* :class:`CodeDependencies`: the entry modules of one kind of work (followed through their imports) and the
  files whose own bytes count (data files, dispatchers).
* :func:`dependency_files`: the package files of a :class:`CodeDependencies`. Imports are followed with
  :mod:`ast` (nothing is imported): ``import radiogenomics.x`` and ``from radiogenomics.x import y`` at module
  level and inside functions; a name re-exported by a package ``__init__`` resolves to the module defining it.
* :func:`code_digest` / :func:`package_digest`: SHA-256 over the relative paths and bytes of those files / of
  every file of the package. Each is computed once per process (the package does not change under a run).

Standard library only, so the run-level "up to date" check stays cheap.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "radiogenomics"
#: The installed package folder (``radiogenomics/``).
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CodeDependencies:
    """Package files (paths relative to the package folder) a result depends on.

    ``modules``: entry modules; every package module they import, directly or not, counts too.
    ``files``: glob patterns of files whose own bytes count (data files; modules whose imports are not followed).
    """

    modules: tuple[str, ...]
    files: tuple[str, ...] = ()


def _module_file(name: str, root: Path) -> Path | None:
    """The file of a dotted module name inside the package (a module or a package ``__init__``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if parts[1:] and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    init = base / "__init__.py"
    return init if init.is_file() else None


def _dotted(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path, root: Path) -> str | None:
    """The absolute module name of a ``from ... import`` (relative imports resolved against ``path``)."""
    if node.level == 0:
        return node.module
    package = _dotted(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _defining_module(init: Path, name: str, root: Path, seen: frozenset[Path] = frozenset()) -> Path:
    """The module a package ``__init__`` takes ``name`` from (the ``__init__`` itself when defined there)."""
    if init in seen:
        return init
    for node in ast.walk(ast.parse(init.read_bytes(), filename=str(init))):
        if not isinstance(node, ast.ImportFrom) or not any((a.asname or a.name) == name for a in node.names):
            continue
        module = _absolute(node, init, root)
        original = next(a.name for a in node.names if (a.asname or a.name) == name)
        target = _module_file(f"{module}.{original}", root) if module else None
        if target is not None:
            return target
        target = _module_file(module, root) if module else None
        if target is None:
            return init
        return _defining_module(target, original, root, seen | {init}) if target.name == "__init__.py" else target
    return init


def _imported_files(path: Path, root: Path) -> set[Path]:
    """Package files imported by the module at ``path`` (module level and inside functions)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(f for a in node.names if (f := _module_file(a.name, root)) is not None)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path, root)
            if not module:
                continue
            for alias in node.names:
                target = _module_file(f"{module}.{alias.name}", root)
                if target is None and (parent := _module_file(module, root)) is not None:
                    target = (_defining_module(parent, alias.name, root) if parent.name == "__init__.py"
                              else parent)
                if target is not None:
                    found.add(target)
    return found


def module_closure(entries: Iterable[Path], root: Path = PACKAGE_ROOT) -> set[Path]:
    """The entry modules and every package module they import, transitively."""
    todo = [Path(e) for e in entries]
    done: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        todo.extend(_imported_files(path, root) - done)
    return done


def _expand(patterns: Iterable[str], root: Path) -> set[Path]:
    files: set[Path] = set()
    for pattern in patterns:
        matched = {p for p in root.glob(pattern) if p.is_file()}
        if not matched:
            raise FileNotFoundError(f"package dependency {pattern!r} matches no file under {root}")
        files |= matched
    return files


def dependency_files(deps: CodeDependencies, root: Path = PACKAGE_ROOT) -> list[Path]:
    """Every package file ``deps`` names or imports, sorted."""
    return sorted(module_closure(_expand(deps.modules, root), root) | _expand(deps.files, root))


def _digest(files: Iterable[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@lru_cache(maxsize=32)
def code_digest(deps: CodeDependencies, root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 of the paths and bytes of :func:`dependency_files` (once per process and ``deps``)."""
    return _digest(dependency_files(deps, root), root)


@lru_cache(maxsize=4)
def package_digest(root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 of every file of the package (code and data; no ``__pycache__``), once per process."""
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return _digest(files, root)
