"""Where the hook definitions (``hooks/``) and the fixture scenarios (``fixtures/``) are read from.

One copy of each lives at the top of the repository. A wheel carries them inside the package as
``cds_service/_data/<name>/`` (setup.py's build hook). Order: an explicit setting or ``CDS_*`` variable
(decided by the caller), then the source checkout this package runs from (editable install), then the
packaged copy, read with ``importlib.resources``.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
PACKAGED = "_data"


def in_checkout() -> bool:
    """True when the package runs from a source checkout (its pyproject.toml sits next to the package)."""
    return (CHECKOUT_DIR / "pyproject.toml").is_file()


def packaged_dir(name: str) -> Path:
    """The copy of ``name`` shipped inside the installed package (it may not exist in a checkout).

    pip unpacks wheels, so this is a real directory; a zipped package is not supported (set CDS_HOOKS_DIR
    and CDS_FIXTURES_DIR), and the loaders then name the missing path."""
    return Path(str(files("cds_service").joinpath(PACKAGED).joinpath(name)))


def data_dir(name: str) -> Path:
    """The checkout's top-level ``name`` directory when running from one, else the packaged copy."""
    checkout = CHECKOUT_DIR / name
    if in_checkout() and checkout.is_dir():
        return checkout
    return packaged_dir(name)
