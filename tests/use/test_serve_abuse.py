"""The server under abuse: no body gets a 5xx, and idle or half-sent connections cannot
lock real users out.

The fuzz tests drive `serve.create_app` in process (Starlette's TestClient) around a
stand-in network, so thousands of bodies cost seconds; the connection tests run the real
server (`serve.run_server`, Hypercorn as the command runs it) on a localhost port.
"""

import io
import json
import socket
import time

import numpy as np
import pytest

from jaxmnist.use import serve

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from servers import running  # noqa: E402


def stand_in(images):
    """(B, 10) log-probabilities of a fixed distribution: the app's plumbing, no network."""
    assert images.shape[1:] == (28, 28, 1) and images.dtype == np.uint8
    return np.log(np.full((len(images), 10), 0.1, np.float32))


@pytest.fixture(scope="module")
def client():
    return TestClient(serve.create_app(stand_in), raise_server_exceptions=False)


CONTENT_TYPES = st.sampled_from(["application/json", "image/png", "image/jpeg", "text/plain",
                                 "application/json; charset=utf-8", "", "multipart/form-data"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=900)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def assert_client_error_or_answer(response):
    assert response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert ("error" in body) if response.status_code >= 400 else ("prediction" in body)


@FUZZ
@given(ctype=CONTENT_TYPES, body=st.binary(max_size=4000))
def test_random_bytes_never_get_a_5xx(client, ctype, body):
    assert_client_error_or_answer(client.post("/predict", content=body,
                                              headers={"content-type": ctype}))


@FUZZ
@given(value=JSON_VALUES)
def test_json_of_every_shape_never_gets_a_5xx(client, value):
    for obj in (value, {"pixels": value}):
        body = json.dumps(obj, allow_nan=True).encode()
        assert_client_error_or_answer(client.post("/predict", content=body,
                                                  headers={"content-type": "application/json"}))


@FUZZ
@given(rows=st.lists(st.lists(st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True)),
                              min_size=28, max_size=28), min_size=28, max_size=28))
def test_pixels_of_the_right_shape_and_any_values_never_get_a_5xx(client, rows):
    body = json.dumps({"pixels": rows}, allow_nan=True).encode()
    assert_client_error_or_answer(client.post("/predict", content=body,
                                              headers={"content-type": "application/json"}))


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"pixels": ' + b"[" * 50 + b"]" * 50 + b"}",
                                  b'{"a": "' + b"[" * 10_000 + b'"}'])
def test_deep_nesting_is_refused_before_parsing(client, body):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text[:200]
    if body.startswith(b"[["):
        assert "nested deeper than" in response.json()["error"]


def test_json_depth_counts_brackets_outside_strings():
    assert serve.json_depth(b'{"pixels": [[1, 2], [3]]}') == 3
    assert serve.json_depth(b'{"k": "[[[[[[", "e": "\\\\\\"[[["}') == 1
    assert serve.json_depth(b"") == 0


def test_broken_images_are_client_errors(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buf, "PNG")
    png = buf.getvalue()
    for body in (png[: len(png) // 2], png[:8] + b"\0" * 100, b"\x89PNG" + b"\xff" * 3000):
        response = client.post("/predict", content=body, headers={"content-type": "image/png"})
        assert 400 <= response.status_code < 500, response.text


@pytest.mark.slow
def test_idle_and_half_sent_connections_do_not_lock_real_users_out():
    """500 connections that send half a request line and wait: a real request is still
    answered within 1 s, and the server closes the idle ones after its read timeout."""
    import httpx

    pixels = {"pixels": [[0] * 28] * 28}
    with running(serve.create_app(stand_in)) as url:
        host, port = url.rsplit("/", 1)[-1].split(":")[0], int(url.rsplit(":", 1)[1])
        idle = []
        try:
            for i in range(500):
                s = socket.create_connection((host, port), timeout=10)
                s.sendall(b"POST /predict HT" if i % 2 else b"")
                idle.append(s)
            for _ in range(5):
                t = time.monotonic()
                r = httpx.post(url + "/predict", json=pixels, timeout=10)
                assert r.status_code == 200 and time.monotonic() - t < 1.0, (r.status_code,
                                                                            time.monotonic() - t)
            time.sleep(serve.READ_TIMEOUT_S + 2)
            closed = 0
            for s in idle:
                s.settimeout(0.5)
                try:
                    closed += s.recv(1024) == b""
                except (ConnectionResetError, BrokenPipeError):
                    closed += 1
                except socket.timeout:
                    pass
            assert closed == len(idle), f"{len(idle) - closed} idle connections still open"
        finally:
            for s in idle:
                s.close()


def test_serve_load_benchmark_tiny_run(tmp_path):
    """benchmarks/serve_load.py against a live server: its JSON and table, no errors."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    out = tmp_path / "load.json"
    with running(serve.create_app(stand_in)) as url:
        code = serve_load.main(["--url", url, "--clients", "2", "--seconds", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and [r["body"] for r in report["results"]] == ["png", "json"]
    for r in report["results"]:
        assert r["requests"] > 0 and r["errors"] == {} and r["p50_ms"] <= r["p99_ms"]
