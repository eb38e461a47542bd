"""Hostile and broken HTTP input: every case is a clean 4xx with an OperationOutcome, quickly, without a 500."""
from __future__ import annotations

import io
import json
import random
import time

import pytest

from cds_service.api.body import json_shape

SERVICE = "/cds-services/magnesium-patient-view"
FEEDBACK = SERVICE + "/feedback"


def outcome(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"]
    if code is not None:
        assert body["issue"][0]["details"]["coding"][0]["code"] == code
    return body


@pytest.fixture
def small_app(app_factory):
    return app_factory(max_body_bytes=64 * 1024)


def post_raw(client, path, raw: bytes, content_type="application/json", **kw):
    return client.post(path, data=raw, content_type=content_type, **kw)


@pytest.mark.parametrize("path", [SERVICE, FEEDBACK])
def test_body_over_the_limit_with_content_length(small_app, path):
    raw = json.dumps({"pad": "x" * 70_000}).encode()
    outcome(post_raw(small_app.test_client(), path, raw), 413, "payload-too-large")


def test_chunked_body_over_the_limit(small_app):
    raw = json.dumps({"pad": "x" * 200_000}).encode()
    resp = small_app.test_client().post(
        SERVICE, input_stream=io.BytesIO(raw), content_type="application/json",
        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    outcome(resp, 413, "payload-too-large")


def test_too_many_values_within_the_byte_limit(small_app):
    raw = b"[" + b"0," * 20_000 + b"0]"  # 40 kB, 20 001 values: more than max_bytes/10
    outcome(post_raw(small_app.test_client(), SERVICE, raw), 413, "payload-too-large")


@pytest.mark.parametrize("depth", [1_025, 5_000, 100_000])
def test_deep_nesting_is_refused(client, depth):
    """Nesting is capped at the parser's 1,024 levels (body.MAX_DEPTH)."""
    raw = b'{"a":' * depth + b"1" + b"}" * depth
    started = time.monotonic()
    body = outcome(post_raw(client, SERVICE, raw), 400, "malformed-json")
    assert time.monotonic() - started < 2.0
    assert "depth" in body["issue"][0]["diagnostics"]


@pytest.mark.slow
def test_deep_arrays_of_several_megabytes_are_refused_quickly(client):
    raw = b"[" * 2_000_000 + b"]" * 2_000_000  # 4 MB, just under the 5 MB default
    started = time.monotonic()
    outcome(post_raw(client, SERVICE, raw), 400, "malformed-json")
    assert time.monotonic() - started < 3.0


def test_nesting_up_to_the_limit_is_read(client, patient_view_body):
    patient_view_body["context"]["deep"] = "DEEP"
    raw = json.dumps(patient_view_body).encode().replace(b'"DEEP"', b'{"a":' * 1_000 + b"1" + b"}" * 1_000)
    resp = post_raw(client, SERVICE, raw)
    assert resp.status_code == 200, resp.get_json()


def test_brackets_inside_strings_do_not_count_as_depth(client, patient_view_body):
    patient_view_body["context"]["note"] = "[[[[{{{{" * 100
    resp = client.post(SERVICE, json=patient_view_body)
    assert resp.status_code == 200, resp.get_json()


def test_escaped_quotes_cannot_stall_the_depth_check(client):
    """An unterminated run of escaped quotes made the old regular expression quadratic (80 kB: ~36 s)."""
    raw = b'"' + b'\\"' * 1_000_000  # 2 MB
    started = time.monotonic()
    outcome(post_raw(client, SERVICE, raw), 400, "malformed-json")
    assert time.monotonic() - started < 3.0


def test_invalid_utf8(client):
    body = outcome(post_raw(client, SERVICE, b'{"hook": "patient-view\xff\xfe"}'), 400, "malformed-json")
    assert "UTF-8" in body["issue"][0]["diagnostics"]


def test_non_utf8_charset(client):
    outcome(post_raw(client, SERVICE, b"{}", content_type="application/json; charset=latin-1"), 415,
            "unsupported-media-type")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type(client, ctype):
    outcome(post_raw(client, SERVICE, b"{}", content_type=ctype), 415, "unsupported-media-type")
    outcome(post_raw(client, FEEDBACK, b"{}", content_type=ctype), 415, "unsupported-media-type")


def test_missing_content_type(client):
    outcome(client.post(SERVICE, data=b"{}"), 415, "unsupported-media-type")


def test_fhir_json_content_type_is_accepted(client, patient_view_body):
    resp = post_raw(client, SERVICE, json.dumps(patient_view_body).encode(), content_type="application/fhir+json; charset=utf-8")
    assert resp.status_code == 200


def test_byte_order_mark_is_tolerated(client, patient_view_body):
    resp = post_raw(client, SERVICE, b"\xef\xbb\xbf" + json.dumps(patient_view_body).encode())
    assert resp.status_code == 200


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b'{"hook": NaN}', b'{"a": Infinity}', b"[1,]", b"\x00"])
def test_malformed_json(client, raw):
    outcome(post_raw(client, SERVICE, raw), 400, "malformed-json")


@pytest.mark.parametrize("raw", [b"[]", b"123", b'"text"', b"null", b'{"hook": 5}'])
def test_valid_json_that_is_not_a_hook_request(client, raw):
    outcome(post_raw(client, SERVICE, raw), 400, "invalid-request")


def test_huge_integer_is_a_400(client):
    outcome(post_raw(client, SERVICE, b'{"hook": ' + b"9" * 100_000 + b"}"), 400, "malformed-json")


@pytest.mark.parametrize("method, path, allowed", [
    ("put", "/cds-services", "GET"),
    ("delete", "/cds-services", "GET"),
    ("post", "/cds-services", "GET"),
    ("get", SERVICE, "POST"),
    ("patch", SERVICE, "POST"),
    ("get", FEEDBACK, "POST"),
    ("post", "/healthz", "GET"),
])
def test_wrong_method_is_405_with_allow(client, method, path, allowed):
    resp = getattr(client, method)(path)
    outcome(resp, 405, "method-not-allowed")
    assert allowed in {m.strip() for m in resp.headers["Allow"].split(",")}


# "/cds-services/" is discovery (trailing slash accepted)
@pytest.mark.parametrize("path", ["/", "/nowhere", "/cds-services/a/b/c", "/admin%00", "/cds-services/x/feedback/y"])
def test_unknown_path_is_404(client, path):
    outcome(client.get(path), 404)


@pytest.mark.parametrize("path", ["/cds-services/no-such-service", "/cds-services/%ff%fe", "/cds-services/..%2f..%2fetc"])
def test_unknown_service_is_404(client, path, patient_view_body):
    outcome(client.post(path, json=patient_view_body), 404)


def test_unknown_service_feedback_is_404(client):
    body = {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"}]}
    outcome(client.post("/cds-services/no-such-service/feedback", json=body), 404, "unknown-service")


# ---------------------------------------------------------------- the shape scanner itself
def _depth(v, d=1):
    if isinstance(v, (list, dict)):
        items = v.values() if isinstance(v, dict) else v
        return max([d] + [_depth(x, d + 1) for x in items])
    return d - 1


def _gen(rnd, d=0):
    r = rnd.random()
    if d > 7 or r < 0.3:
        return rnd.choice([1, 'a\\"[{,', "\\", "]}", None, 2.5, 'x"y', "", '\\\\"\\', "é[ü"])
    if r < 0.65:
        return [_gen(rnd, d + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(["k", "[", '\\"', ",}"]) + str(i): _gen(rnd, d + 1) for i in range(rnd.randint(0, 4))}


def test_shape_depth_agrees_with_the_parser_on_random_documents():
    rnd = random.Random(20261125)
    for _ in range(2000):
        value = _gen(rnd)
        raw = json.dumps(value, ensure_ascii=rnd.random() < 0.5).encode()
        depth, values = json_shape(raw)
        assert depth == _depth(value), raw


def test_shape_value_count():
    assert json_shape(b"[1, 2, 3]") == (1, 4)
    assert json_shape(b'{"a": "x,y", "b": [1, 2]}') == (2, 5)
    assert json_shape(b'"a,b,[c"') == (0, 1)


def test_shape_scanner_is_linear_on_adversarial_input():
    """Time grows with size, not with its square: 8x the bytes must cost far less than 64x the time."""
    def cost(n: int) -> float:
        raw = b'"' + b'\\"' * n + b'"' * n + b"[" * n
        started = time.perf_counter()
        json_shape(raw)
        return time.perf_counter() - started

    small = min(cost(50_000) for _ in range(3))
    large = min(cost(400_000) for _ in range(3))
    assert large < max(small, 0.002) * 24
