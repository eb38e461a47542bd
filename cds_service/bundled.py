"""Where the hook definitions (``hooks/``) and the fixture scenarios (``fixtures/``) are read from.

One copy of each lives at the top of the repository. A wheel carries them inside the package as
``cds_service/_data/<name>/`` (setup.py's build hook). Order: an explicit setting or ``CDS_*`` variable
(decided by the caller), then the source checkout this package runs from (editable install), then the
packaged copy, read with ``importlib.resources``.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
from importlib.resources import as_file, files
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
PACKAGED = "_data"

_extracted = contextlib.ExitStack()  # only for a zipped install: directories extracted for the process's life
atexit.register(_extracted.close)


def in_checkout() -> bool:
    """True when the package runs from a source checkout (its pyproject.toml sits next to the package)."""
    return (CHECKOUT_DIR / "pyproject.toml").is_file()


@functools.cache
def packaged_dir(name: str) -> Path:
    """The copy of ``name`` shipped inside the installed package (it may not exist in a checkout)."""
    resource = files("cds_service").joinpath(PACKAGED).joinpath(name)
    if isinstance(resource, Path):
        return resource
    return Path(_extracted.enter_context(as_file(resource)))


def data_dir(name: str) -> Path:
    """The checkout's top-level ``name`` directory when running from one, else the packaged copy."""
    checkout = CHECKOUT_DIR / name
    if in_checkout() and checkout.is_dir():
        return checkout
    return packaged_dir(name)
