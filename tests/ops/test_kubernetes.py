"""deploy/kubernetes: every manifest validated with kubernetes-validate against a pinned Kubernetes version,
the pieces fit together (labels, ports, probes, Secret keys, ConfigMaps), the generated ConfigMaps are in step with
hooks/ and the knowledge and make a working service, and the proxy's nginx.conf runs in front of a real service."""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import time

import kubernetes_validate
import pytest
import requests
import yaml

from cds_service.cli import serve
from cds_service.config import Settings
from cds_service.definitions import definition_files
from cds_service.kit import k8s
from tests.ops.opskit import REPO, Served, free_port, request_file, serve_env

KUBERNETES_VERSION = "1.31.0"  # pinned: the oldest minor still commonly supported when this was written
DEPLOY = REPO / "deploy" / "kubernetes"


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return out


DOCS = _docs()


def _one(kind: str, name: str) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


@pytest.mark.parametrize("doc", [d for _, d in DOCS], ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_is_valid_for_the_pinned_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert doc["metadata"].get("namespace", "cds-magnesium") == "cds-magnesium"


def test_validation_catches_a_mistake():
    broken = copy.deepcopy(_one("Deployment", "cds-service"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def test_required_kinds_are_there():
    kinds = {d["kind"] for _, d in DOCS}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret",
            "NetworkPolicy", "Namespace"} <= kinds


def _service_pod() -> tuple[dict, dict]:
    dep = _one("Deployment", "cds-service")
    return dep, dep["spec"]["template"]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_deployment_replicas_probes_resources_and_arguments():
    dep, pod = _service_pod()
    assert dep["spec"]["replicas"] >= 2
    assert _matches(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert container["args"][:2] == ["cds-service", "serve"]
    params = serve.make_context("serve", list(container["args"][2:])).params  # the real parser accepts them
    assert params["port"] == ports["http"] and params["host"] == "0.0.0.0"
    env = {e["name"]: e for e in container["env"]}
    settings_vars = {f"CDS_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert {n for n in env if n.startswith("CDS_")} <= settings_vars
    assert env["CDS_AUTH_MODE"]["value"] == "required"
    assert int(env["CDS_METRICS_PORT"]["value"]) == ports["metrics"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith(mounts["tmp"])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert env["CDS_HOOKS_DIR"]["value"] == mounts["hooks"] and volumes["hooks"]["configMap"]["name"] == "cds-hooks"
    assert env["CDS_KNOWLEDGE_DIR"]["value"] == mounts["knowledge"]
    assert volumes["knowledge"]["configMap"]["name"] == "cds-knowledge"
    secret = _one("Secret", "cds-secrets")["stringData"]
    assert env["CDS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] in secret
    trust = volumes["trust"]["secret"]
    assert trust["secretName"] == "cds-secrets" and all(i["key"] in secret for i in trust["items"])
    assert env["CDS_TRUSTED_ISSUERS_FILE"]["value"] == f"{mounts['trust']}/{trust['items'][0]['path']}"
    assert yaml.safe_load(secret["trusted-issuers.yaml"])["issuers"]


def test_service_hpa_pdb_and_network_policies_select_the_pods():
    _, pod = _service_pod()
    labels = pod["metadata"]["labels"]
    container_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    svc = _one("Service", "cds-service")
    assert _matches(svc["spec"]["selector"], labels)
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    hpa = _one("HorizontalPodAutoscaler", "cds-service")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cds-service"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert _matches(_one("PodDisruptionBudget", "cds-service")["spec"]["selector"]["matchLabels"], labels)
    policy = _one("NetworkPolicy", "cds-service")
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], labels)
    proxy_labels = _one("Deployment", "cds-proxy")["spec"]["template"]["metadata"]["labels"]
    sources = [f["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for f in rule["from"]
               if "podSelector" in f]
    assert any(_matches(s, proxy_labels) for s in sources) and not any(_matches(s, labels) for s in sources)


def test_generated_config_maps_are_in_step_and_make_a_working_service(tmp_path):
    assert k8s.main(["--check"]) == 0, "run python -m cds_service.kit.k8s"
    for name in ("cds-hooks", "cds-knowledge"):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in _one("ConfigMap", name)["data"].items():
            (folder / file).write_text(text)
    from cds_service import create_app
    from cds_service.knowledge import load_knowledge
    from cds_service.services import get_services

    app = create_app(Settings.from_env(hooks_dir=str(tmp_path / "cds-hooks"), knowledge_dir=str(tmp_path / "cds-knowledge"),
                                       database_url="sqlite://", auth_mode="off"))
    services = app.test_client().get("/cds-services").get_json()["services"]
    assert {s["id"] for s in services} == {p.stem for p in definition_files(REPO / "hooks")}
    assert get_services(app).knowledge.version == load_knowledge().version
    get_services(app).store.close()


# ---------------------------------------------------------------------- the proxy, for real
@pytest.fixture
def proxied(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.fail("nginx is not installed: scripts/test.sh installs nginx-light")
    served = Served(tmp_path, serve_env(tmp_path, CDS_AUTH_MODE="off", CDS_WORKERS="1"))
    conf = _one("ConfigMap", "cds-proxy")["data"]["nginx.conf"]
    assert "server cds-service:8080 " in conf and "listen 8080;" in conf
    port = free_port()
    conf = (conf.replace("server cds-service:8080 ", f"server 127.0.0.1:{served.port} ")
            .replace("listen 8080;", f"listen 127.0.0.1:{port};")
            .replace("/tmp/", f"{tmp_path}/")
            .replace("client_header_timeout 10s;", "client_header_timeout 2s;"))  # the one change: a quicker test
    if os.geteuid() == 0:
        conf = "user root;\n" + conf
    (tmp_path / "nginx.conf").write_text(conf)
    check = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(tmp_path / "nginx.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "nginx.log").read_text()
            time.sleep(0.1)
    yield url, served
    proc.terminate()
    proc.wait(10)
    served.stop()


POST_CALL = '"POST /cds-services/magnesium-patient-view"'


def _accesses(served: Served, request_line: str) -> int:
    """Access log lines of the service for this request line (what reached gunicorn)."""
    return sum("gunicorn.access" in ln and request_line in ln for ln in served.log().splitlines())


def _await_accesses(served: Served, request_line: str, n: int) -> None:
    deadline = time.monotonic() + 10  # the access line is written just after the response is sent
    while _accesses(served, request_line) < n:
        assert time.monotonic() < deadline, served.log()[-2000:]
        time.sleep(0.1)


@pytest.mark.processes
def test_proxy_passes_calls_and_answers_oversized_requests_with_an_operation_outcome(proxied):
    url, served = proxied
    resp = requests.post(url + "/cds-services/magnesium-patient-view", data=request_file(
        "mg-gitelman-02.patient-view.prefetch.json"), headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["cards"]
    _await_accesses(served, POST_CALL, 1)
    too_big = requests.post(url + "/cds-services/magnesium-patient-view", data=b"x" * (6 * 2**20),
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert too_big.status_code == 413 and too_big.headers["Content-Type"] == "application/fhir+json"
    assert too_big.json()["issue"][0]["details"]["coding"][0]["code"] == "payload-too-large"
    huge_headers = requests.get(url + "/cds-services", headers={"X-Padding": "a" * 20000}, timeout=30)
    assert huge_headers.status_code == 431 and huge_headers.json()["resourceType"] == "OperationOutcome"
    assert requests.get(url + "/metrics", timeout=5).status_code == 404  # metrics are not for clients
    time.sleep(0.5)
    assert _accesses(served, POST_CALL) == 1  # none of these reached the service
    assert _accesses(served, '"GET /cds-services"') == 0 and _accesses(served, '"GET /metrics"') == 0


@pytest.mark.processes
def test_proxy_holds_a_slow_body_and_drops_a_stalled_client(proxied):
    url, served = proxied
    host, port = url.removeprefix("http://").split(":")
    body = request_file("mg-gitelman-02.patient-view.prefetch.json")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /cds-services/magnesium-patient-view HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[: len(body) // 2])
        time.sleep(1.0)
        assert _accesses(served, POST_CALL) == 0  # half a body: the service has not been bothered
        s.sendall(body[len(body) // 2:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    _await_accesses(served, POST_CALL, 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:  # headers that never finish
        s.sendall(b"GET /cds-services HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert s.recv(1024) == b""  # nginx closes it after client_header_timeout
        assert time.monotonic() - started < 10
    assert _accesses(served, '"GET /cds-services"') == 0
