"""Several worker processes writing into one store at once (and migrating it at start-up): no lost rows."""
from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import func, select

from cds_service.audit.schema import CardRow, InvocationRow
from cds_service.audit.store import AuditStore
from tests.audit.helpers import write_invocations_in_process

pytestmark = pytest.mark.processes  # four writer processes

WORKERS, N = 4, 60


def test_four_processes_write_every_row(db_url):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like gunicorn workers
    with ctx.Pool(WORKERS) as pool:  # the database is empty: the workers also race to migrate it
        written = pool.starmap(write_invocations_in_process, [(db_url, w, N) for w in range(WORKERS)])
    assert written == [N] * WORKERS
    store = AuditStore(db_url, create=False, background=False)
    with store.sessions() as s:
        assert s.scalar(select(func.count()).select_from(InvocationRow)) == WORKERS * N
        assert s.scalar(select(func.count(func.distinct(InvocationRow.hook_instance)))) == WORKERS * N
        assert s.scalar(select(func.count()).select_from(CardRow)) == WORKERS * N
    store.close()
