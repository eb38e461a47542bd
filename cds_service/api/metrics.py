"""``GET /metrics`` (Prometheus text format), behind the service's client authentication.

Not mounted when ``CDS_METRICS_PORT`` is set: ``cds-service serve`` then serves the same metrics on
that port (from the gunicorn master, for all workers).
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app

from .. import metrics

bp = Blueprint("metrics", __name__)


def register(app: Flask) -> None:
    if not app.extensions["cds"].settings.metrics_port:
        app.register_blueprint(bp)


@bp.get("/metrics")
def scrape():
    metrics.sync_audit(current_app.extensions["cds"].store)
    body, content_type = metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type, headers={"Cache-Control": "no-store"})
