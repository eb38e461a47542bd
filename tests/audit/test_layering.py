"""The audit code is fed by explicit records: it imports nothing from the engine, the app or the HTTP layer."""
from __future__ import annotations

import ast
from pathlib import Path

import cds_service

PACKAGE = Path(cds_service.__file__).resolve().parent
FORBIDDEN = ("cds_service.engine", "cds_service.app", "cds_service.api")


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
