"""The app factory: explicit arguments, the caller's logging left alone, one container per app."""
from __future__ import annotations

import logging

import pytest

from cds_service import create_app
from cds_service.app import create_app as factory
from cds_service.config import Settings
from cds_service.logs import QUIET_AT_INFO
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path}/audit.sqlite3", auth_mode="off")


def test_the_package_exports_the_factory():
    assert create_app is factory


def test_the_factory_leaves_logging_to_its_caller(settings, knowledge):
    root = logging.getLogger()
    quiet = [logging.getLogger(name) for name in QUIET_AT_INFO]
    handlers, levels = list(root.handlers), [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.NOTSET)
    try:
        app = create_app(settings, knowledge=knowledge)
        get_services(app).store.close()
        assert root.handlers == handlers
        assert [q.level for q in quiet] == [logging.NOTSET] * len(quiet)  # logs.configure would have raised them
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def test_what_the_caller_gives_is_what_the_app_uses(settings, knowledge):
    app = create_app(settings, knowledge=knowledge, clock=lambda: FIXED_NOW)
    services = get_services(app)
    try:
        assert services.settings is settings and services.knowledge is knowledge
        assert services.engine.clock() == FIXED_NOW
        with app.app_context():
            assert get_services() is services
    finally:
        services.store.close()


def test_the_arguments_after_settings_are_keywords(settings, knowledge):
    with pytest.raises(TypeError):
        create_app(settings, knowledge)
