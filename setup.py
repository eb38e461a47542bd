"""Build hook: the wheel carries the top-level ``hooks/`` and ``fixtures/`` inside the package.

The repository keeps one copy of each at its top level (the single source); ``build_py`` copies the
files the installed service and CLI read into ``cds_service/_data/`` of the build, where
``cds_service.bundled`` finds them with ``importlib.resources``. Everything else is in pyproject.toml.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# top-level directory -> the files of it an installed cds-service reads (fixtures/requests/ is regenerated
# with `cds-service fixtures requests`, the fixtures/*.py generators are development tools)
SHIPPED = {
    "hooks": ("*.yaml", "*.yml"),
    "fixtures": ("scenarios.yaml", "scenarios/*.json", "drafts/*.json"),
}
TARGET = ("cds_service", "_data")


class BuildPyWithData(build_py):
    """``build_py`` that also copies ``SHIPPED`` into ``cds_service/_data/`` (stale copies removed first)."""

    def _shipped(self) -> list[tuple[str, str]]:
        pairs = []
        for top, patterns in SHIPPED.items():
            found = sorted({p for pattern in patterns for p in Path(top).glob(pattern) if p.is_file()})
            if not found:
                raise SystemExit(f"setup.py: nothing to ship from {top}/ ({', '.join(patterns)}): "
                                 "build from a complete source tree")
            pairs += [(str(p), os.path.join(self.build_lib, *TARGET, str(p))) for p in found]
        return pairs

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's own directories
            return
        shutil.rmtree(os.path.join(self.build_lib, *TARGET), ignore_errors=True)
        for src, dst in self._shipped():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:  # type: ignore[override]
        extra = [] if self.editable_mode else [dst for _, dst in self._shipped()]
        return [*super().get_outputs(include_bytecode), *extra]


setup(cmdclass={"build_py": BuildPyWithData})
