"""Every YAML file the service reads (knowledge, hook definitions, fixture scenarios, trusted issuers, its
OpenAPI document) is parsed here: with libyaml's C parser when PyYAML has it (about 10 times faster; the
knowledge load was most of an app build), else PyYAML's pure-Python one. Both are the safe loader: plain
data, no Python objects. tests/service/test_yaml_loader.py checks that both read our files the same."""
from __future__ import annotations

from typing import IO, Any

import yaml

YAMLError = yaml.YAMLError
Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """The one document in ``stream`` (text, bytes or an open file) as plain Python data."""
    return yaml.load(stream, Loader=Loader)  # a safe loader, C or Python
