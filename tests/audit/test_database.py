"""The audit store's PostgreSQL connections are bounded in time: a database that vanishes without closing its
connections is noticed (keepalives, tcp_user_timeout) instead of hanging the writer; the URL may override."""
from __future__ import annotations

import pytest
from sqlalchemy import event

from cds_service.audit.database import POSTGRES_CONNECT_DEFAULTS, make_engine


class Captured(Exception):
    pass


def connect_params(url: str) -> dict:
    """The parameters the driver would be called with (captured before any connection is attempted)."""
    engine = make_engine(url)
    seen: dict = {}

    @event.listens_for(engine, "do_connect")
    def capture(dialect, conn_rec, cargs, cparams):
        seen.update(cparams)
        raise Captured

    with pytest.raises(Captured):
        engine.connect()
    engine.dispose()
    return seen


def test_postgres_connections_get_keepalives_and_a_user_timeout():
    params = connect_params("postgresql://audit@127.0.0.1:1/cds")
    assert {k: params[k] for k in POSTGRES_CONNECT_DEFAULTS} == POSTGRES_CONNECT_DEFAULTS
    assert params["keepalives"] == 1 and params["tcp_user_timeout"] <= 60_000 and params["connect_timeout"] <= 30


def test_the_url_overrides_a_default():
    params = connect_params("postgresql+psycopg://audit@127.0.0.1:1/cds?connect_timeout=2&keepalives_idle=3")
    assert str(params["connect_timeout"]) == "2" and str(params["keepalives_idle"]) == "3"
    assert params["tcp_user_timeout"] == POSTGRES_CONNECT_DEFAULTS["tcp_user_timeout"]


def test_sqlite_gets_no_postgres_parameters(tmp_path):
    params = connect_params(f"sqlite:///{tmp_path}/a.sqlite3")
    assert not set(POSTGRES_CONNECT_DEFAULTS) & set(params) - {"connect_timeout"}
    assert "keepalives" not in params
