"""Where hooks/ and fixtures/ are read from in a source checkout: setting or variable first, then the
checkout's own top-level directories (the packaged fallback is exercised by test_wheel_install.py)."""
from __future__ import annotations

from pathlib import Path

from cds_service import bundled
from cds_service.config import Settings
from cds_service.fixtures import fixtures_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_reads_its_top_level_directories(monkeypatch):
    monkeypatch.delenv("CDS_HOOKS_DIR", raising=False)
    monkeypatch.delenv("CDS_FIXTURES_DIR", raising=False)
    assert bundled.in_checkout()
    assert Path(Settings.from_env({}).hooks_dir) == REPO / "hooks"
    assert fixtures_dir() == REPO / "fixtures"


def test_the_packaged_copy_lives_inside_the_package():
    assert bundled.packaged_dir("hooks") == REPO / "cds_service" / "_data" / "hooks"


def test_a_variable_overrides_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_FIXTURES_DIR", str(tmp_path / "env-fixtures"))
    assert Settings.from_env({"CDS_HOOKS_DIR": str(tmp_path / "env-hooks")}).hooks_dir == str(tmp_path / "env-hooks")
    assert fixtures_dir() == tmp_path / "env-fixtures"


def test_an_explicit_setting_overrides_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_FIXTURES_DIR", str(tmp_path / "env-fixtures"))
    settings = Settings.from_env({"CDS_HOOKS_DIR": str(tmp_path / "env-hooks")}, hooks_dir=str(tmp_path / "mine"))
    assert settings.hooks_dir == str(tmp_path / "mine")
    assert fixtures_dir(tmp_path / "mine") == tmp_path / "mine"
