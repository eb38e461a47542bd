"""The C YAML loader (libyaml) reads every YAML file the service ships exactly as PyYAML's pure-Python loader does."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from cds_service import yaml_files
from cds_service.api.openapi import DOCUMENT
from cds_service.bundled import data_dir
from cds_service.knowledge import DATA_DIR

SHIPPED = sorted(DATA_DIR.glob("*.yaml")) + sorted(data_dir("hooks").glob("*.yaml")) + [
    data_dir("fixtures") / "scenarios.yaml", DOCUMENT]


def same(a, b) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True would hide a type change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_the_service_reads_yaml_with_the_c_loader():
    assert yaml.__with_libyaml__, "PyYAML was installed without libyaml: every YAML read falls back to the slow loader"
    assert yaml_files.Loader is yaml.CSafeLoader


def test_every_shipped_file_is_checked():
    names = {p.name for p in SHIPPED}
    assert {"knowledge.yaml", "drugs.yaml", "scenarios.yaml", "openapi.yaml"} <= names
    assert len([p for p in SHIPPED if p.parent == data_dir("hooks")]) >= 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_c_and_python_loaders_read_the_same(path: Path):
    text = path.read_text(encoding="utf-8")
    python = yaml.load(text, Loader=yaml.SafeLoader)  # the safe loaders
    c = yaml.load(text, Loader=yaml.CSafeLoader)
    assert python, f"{path} is empty"
    assert same(python, c), f"{path}: the C loader reads it differently"
    assert same(yaml_files.load_yaml(text), python)
    with open(path, encoding="utf-8") as fh:  # the knowledge is read from an open file
        assert same(yaml_files.load_yaml(fh), python)


def test_same_sees_a_type_change():
    assert not same({"a": 1}, {"a": 1.0}) and not same([True], [1]) and same({"a": [1, "x"]}, {"a": [1, "x"]})
