"""Imports go one way: HTTP (api, app) -> the call's steps (engine, prefetch, protocol) -> decide -> rules and
cards -> the record and the knowledge. The audit code is fed by explicit records: it imports nothing from the
engine, the app or the HTTP layer. Read from the source (ast), so a lazy import inside a function counts too."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import cds_service

PACKAGE = Path(cds_service.__file__).resolve().parent
FORBIDDEN = ("cds_service.engine", "cds_service.app", "cds_service.api")
ABOVE_THE_CALL = ("cds_service.api", "cds_service.app", "cds_service.services", "cds_service.cli", "cds_service.serving",
                  "cds_service.workers", "flask", "werkzeug")
# module (or package) -> what it must never import
LAYERS: dict[str, tuple[str, ...]] = {
    # the clinical core: pure functions over a typed record and an explicit now
    "knowledge": ("cds_service.record", "cds_service.rules", "cds_service.cards", "cds_service.decide", "cds_service.engine",
                  "cds_service.prefetch", "cds_service.audit", *ABOVE_THE_CALL),
    "record": ("cds_service.rules", "cds_service.cards", "cds_service.decide", "cds_service.engine", "cds_service.prefetch",
               "cds_service.audit", *ABOVE_THE_CALL),
    "rules": ("cds_service.cards", "cds_service.decide", "cds_service.engine", "cds_service.prefetch", "cds_service.audit",
              "requests", *ABOVE_THE_CALL),
    "cards": ("cds_service.decide", "cds_service.engine", "cds_service.prefetch", "cds_service.audit", "requests", *ABOVE_THE_CALL),
    "decide.py": ("cds_service.engine", "cds_service.prefetch", "cds_service.audit", "requests", *ABOVE_THE_CALL),
    # the call's steps: no HTTP framework, no audit
    "engine.py": ("cds_service.audit", *ABOVE_THE_CALL),
    "prefetch": ("cds_service.engine", "cds_service.audit", *ABOVE_THE_CALL),
    "protocol": ("cds_service.engine", "cds_service.prefetch", "cds_service.audit", *ABOVE_THE_CALL),
    "audit": FORBIDDEN + ("cds_service.services", "cds_service.cli", "cds_service.serving", "cds_service.workers"),
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file under cds_service/ imports (relative imports resolved)."""
    package = ".".join(("cds_service", *path.relative_to(PACKAGE).parent.parts))
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # "from .. import engine"
    return out


def test_the_import_reader_resolves_relative_imports():
    store = imported_modules(PACKAGE / "audit" / "store.py")
    assert "cds_service.errors" in store and "cds_service.audit.compact" in store and "sqlalchemy" in store


def test_audit_imports_nothing_from_the_engine_app_or_api():
    found = {}
    for path in sorted((PACKAGE / "audit").glob("*.py")):
        bad = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
        if bad:
            found[path.name] = bad
    assert found == {}


def _offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_every_layer_imports_only_downwards():
    found = {}
    for where, forbidden in LAYERS.items():
        target = PACKAGE / where
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        assert paths and all(p.is_file() for p in paths), where  # the table names what exists
        for path in paths:
            if "migrations" in path.parts:
                continue
            bad = _offending(path, forbidden)
            if bad:
                found[str(path.relative_to(PACKAGE))] = bad
    assert found == {}


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    (tmp_path / "rules").mkdir()
    upward = tmp_path / "rules" / "upward.py"
    upward.write_text("from flask import current_app\n\ndef f():\n    from ..engine import Engine\n", encoding="utf-8")
    assert _offending(upward, LAYERS["rules"]) == ["cds_service.engine", "cds_service.engine.Engine", "flask", "flask.current_app"]
