"""A plain install runs: build a wheel, install it into a fresh virtual environment and use the
``cds-service`` command from a directory outside the repository (issue 13, "Installs anywhere").

The wheel is built from a copy of the source tree without build isolation (setuptools comes from the
test extra, so this works offline). The fresh environment gets only the wheel; the dependencies are
borrowed from the test environment by a ``.pth`` path line, which adds that site-packages directory
to ``sys.path`` without running its ``.pth`` files, so the editable install of the checkout stays
invisible and everything ``cds_service`` reads has to come from the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import requests
import yaml

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.definitions import definition_files
from cds_service.fixtures import list_scenarios, request_files
from cds_service.services import get_services
from tests.helpers.env import FIXED_NOW
from tests.helpers.processes import free_port as _free_port
from tests.helpers.processes import wait_until_healthy

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[2]
# what never goes into the build's source copy (local state, caches, earlier builds)
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".cache", ".pytest_cache", ".hypothesis", "__pycache__",
                                    "*.pyc", "*.egg-info", "build", "dist", "bench", "tests", "test-artifacts",
                                    "*.sqlite3", "*.db")
BIN = "Scripts" if os.name == "nt" else "bin"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without CDS_* settings or Python path overrides that could reach the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDS_") and k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}}
    env.update(extra)
    return env


def _pip_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("pip").split(".")[:2])


class Installed:
    """The fresh environment holding the wheel, and a working directory outside the repository."""

    def __init__(self, root: Path, wheel: Path):
        self.root = root
        self.wheel = wheel
        self.python = root / "venv" / BIN / "python"
        self.cli = root / "venv" / BIN / "cds-service"
        self.site = Path(_run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                         .stdout.strip())
        self.workdir = root / "elsewhere"
        self.workdir.mkdir(exist_ok=True)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _run([str(self.cli), *args], cwd=self.workdir, env=_clean_env(**env))

    def python_c(self, code: str, **env: str) -> str:
        return _run([str(self.python), "-c", code], cwd=self.workdir, env=_clean_env(**env)).stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel-install")
    assert not root.resolve().is_relative_to(REPO), "the install must live outside the repository"
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(source)], env=_clean_env())
    wheels = sorted(dist.glob("cds_service-*.whl"))
    assert len(wheels) == 1, wheels
    install = ["install", "--no-deps", "--no-index", "--no-compile", "-q", str(wheels[0])]
    if _pip_version() >= (22, 3):  # this pip installs into the new environment: no pip of its own needed (fast)
        _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], env=_clean_env())
        installed = Installed(root, wheels[0])
        _run([sys.executable, "-m", "pip", "--python", str(installed.python), *install], env=_clean_env())
    else:
        _run([sys.executable, "-m", "venv", str(root / "venv")], env=_clean_env())
        installed = Installed(root, wheels[0])
        _run([str(installed.python), "-m", "pip", *install], env=_clean_env())
    borrowed = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (installed.site / "cds_test_dependencies.pth").write_text("\n".join(borrowed) + "\n", encoding="utf-8")
    return installed


@pytest.fixture(scope="module")
def checkout_requests() -> dict[str, str]:
    """The ready hook requests as the checkout builds them (its own hooks/ and fixtures/)."""
    app = create_app(Settings.from_env(database_url="sqlite://"))
    try:
        return request_files(get_services(app).catalog, FIXED_NOW, REPO / "fixtures")
    finally:
        get_services(app).store.close()


def _service_ids_in_repo() -> set[str]:
    return {yaml.safe_load(p.read_text(encoding="utf-8"))["id"] for p in definition_files(REPO / "hooks")}


def test_the_wheel_carries_hooks_and_fixture_scenarios(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    hooks = {f"cds_service/_data/hooks/{p.name}" for p in (REPO / "hooks").glob("*.yaml")}
    scenarios = {f"cds_service/_data/fixtures/{p.relative_to(REPO / 'fixtures').as_posix()}"
                 for pattern in ("scenarios.yaml", "scenarios/*.json", "drafts/*.json")
                 for p in (REPO / "fixtures").glob(pattern)}
    assert hooks and hooks <= names
    assert len(scenarios) > 2 and scenarios <= names
    # the top-level directories are not installed as top-level packages, and the generators stay behind
    assert not any(n.startswith(("hooks/", "fixtures/")) for n in names)
    assert not any(n.startswith("cds_service/_data/fixtures/requests/") or n.endswith("make_requests.py")
                   for n in names)


def test_the_installed_package_reads_its_own_copies(installed):
    """No CDS_* variables: the package is the wheel's, and hooks/fixtures resolve inside it."""
    out = json.loads(installed.python_c(
        "import json, cds_service, cds_service.bundled as b; from cds_service.config import Settings;"
        "from cds_service.fixtures import fixtures_dir;"
        "print(json.dumps([cds_service.__file__, Settings.from_env().hooks_dir, str(fixtures_dir()),"
        " b.in_checkout()]))"))
    package, hooks_dir, fixtures, in_checkout = out
    site = installed.site.resolve()
    assert Path(package).resolve().is_relative_to(site)
    assert Path(hooks_dir).resolve() == site / "cds_service" / "_data" / "hooks"
    assert Path(fixtures).resolve() == site / "cds_service" / "_data" / "fixtures"
    assert in_checkout is False


def test_environment_variables_override_the_packaged_copies(installed, tmp_path):
    hooks = tmp_path / "my-hooks"
    fixtures = tmp_path / "my-fixtures"
    out = json.loads(installed.python_c(
        "import json; from cds_service.config import Settings; from cds_service.fixtures import fixtures_dir;"
        "print(json.dumps([Settings.from_env().hooks_dir, str(fixtures_dir())]))",
        CDS_HOOKS_DIR=str(hooks), CDS_FIXTURES_DIR=str(fixtures)))
    assert out == [str(hooks), str(fixtures)]


def test_serve_lists_the_services_from_outside_the_repository(installed):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = installed.workdir / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([str(installed.cli), "serve", "--port", str(port)], cwd=installed.workdir,
                                env=_clean_env(CDS_AUTH_MODE="off", CDS_WORKERS="1"), stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(base, proc, 60, lambda: log.read_text(errors="replace"))
        discovery = requests.get(f"{base}/cds-services", timeout=10)
        assert discovery.status_code == 200
        services = discovery.json()["services"]
        assert {s["id"] for s in services} == _service_ids_in_repo()
        assert sorted(s["hook"] for s in services) == ["order-select", "order-sign", "patient-view"]
        assert all(s["prefetch"] for s in services)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_fixtures_list_names_every_scenario(installed):
    listed = installed.run("fixtures", "list").stdout
    scenarios = list_scenarios(REPO / "fixtures")
    assert len(scenarios) > 2
    for s in scenarios:
        drafts = s.drafts_path.name if s.drafts_path else "-"
        assert f"{s.id}  patient={s.patient_id}  drafts={drafts}" in listed


def test_fixtures_dir_override_reaches_the_installed_command(installed, tmp_path):
    one = list_scenarios(REPO / "fixtures")[0]
    mine = tmp_path / "fixtures"
    mine.mkdir()
    index = yaml.safe_load((REPO / "fixtures" / "scenarios.yaml").read_text(encoding="utf-8"))
    index["scenarios"] = [item for item in index["scenarios"] if item["id"] == one.id]
    (mine / "scenarios.yaml").write_text(yaml.safe_dump(index), encoding="utf-8")
    listed = installed.run("fixtures", "list", CDS_FIXTURES_DIR=str(mine)).stdout
    assert [line.split()[0] for line in listed.splitlines() if not line.startswith(" ")] == [one.id]


def test_ready_requests_from_the_wheel_match_the_checkout(installed, checkout_requests, tmp_path):
    """`fixtures requests` reads hooks, scenarios and drafts: the wheel's copies give the checkout's requests."""
    out = tmp_path / "requests"
    installed.run("fixtures", "requests", "--out", str(out))
    expected = checkout_requests
    written = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.json")}
    assert sorted(written) == sorted(expected)
    assert [name for name in expected if written[name] != expected[name]] == []


def test_invoke_gives_the_scenarios_cards(installed, checkout_requests, tmp_path):
    scenario = next(s for s in list_scenarios(REPO / "fixtures") if s.expected["patient-view"])
    request = tmp_path / "request.json"
    request.write_text(checkout_requests[f"{scenario.id}.patient-view.prefetch.json"], encoding="utf-8")
    response = json.loads(installed.run("invoke", str(request), "--json", "--now", FIXED_NOW.isoformat()).stdout)
    assert {card["source"]["topic"]["code"] for card in response["cards"]} == set(scenario.expected["patient-view"])
