"""The service's own OpenAPI 3 document (cds_service/openapi.yaml), served as YAML and JSON."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, jsonify

from ..yaml_files import load_yaml

bp = Blueprint("openapi", __name__)
DOCUMENT = Path(__file__).resolve().parents[1] / "openapi.yaml"


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return load_yaml(DOCUMENT.read_text(encoding="utf-8"))


@bp.get("/openapi.yaml")
def openapi_yaml():
    return Response(DOCUMENT.read_bytes(), mimetype="application/yaml")


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
