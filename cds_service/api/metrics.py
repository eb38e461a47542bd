"""``GET /metrics`` (Prometheus text format), behind the service's client authentication.

Not mounted when ``CDS_METRICS_PORT`` is set: ``cds-service serve`` then serves the same metrics on
that port (from the gunicorn master, for all workers).
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response

from .. import metrics
from ..services import get_services

bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Mount /metrics unless ``CDS_METRICS_PORT`` serves it on a port of its own."""
    if not get_services(app).settings.metrics_port:
        app.register_blueprint(bp)


@bp.get("/metrics")
def scrape():
    metrics.sync_audit(get_services().store)
    body, content_type = metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type, headers={"Cache-Control": "no-store"})
