"""HTTP service: a real uvicorn server on a loopback port and a real HTTP client."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.inference import Recommender

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

TIMEOUT = 20.0  # seconds any one request or start-up may take


@contextlib.contextmanager
def running_server(app):
    """uvicorn on 127.0.0.1 on a socket bound here, so the port is known and never raced."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


def _client(url: str):
    # trust_env=False: a proxy from the environment must not sit between us and loopback.
    return httpx.Client(base_url=url, timeout=TIMEOUT, trust_env=False)


@pytest.fixture(scope="module")
def served(small_artifact):
    from recsys.inference.http import create_app

    rec = Recommender.load(small_artifact)
    with running_server(create_app(rec)) as url, _client(url) as client:
        yield rec, client


def test_round_trip_matches_the_python_api(served):
    rec, client = served
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["n_items"] == rec.n_items
    histories = [["i1", "i2", "nope"], [], ["i7"]]
    reply = client.post("/recommend", json={"histories": histories, "k": 5, "exclude_seen": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    local = rec.recommend(histories, k=5, exclude_seen=True)
    assert body["items"][0] == local.items[0] and body["items"][2] == local.items[2]
    np.testing.assert_allclose(body["scores"][0], local.scores[0], rtol=1e-6)
    assert body["n_unknown"] == [1, 0, 0] and body["fallback"] == [False, True, False]
    assert body["scores"][1] == [None] * 5  # a fallback row has no model scores (NaN in Python)
    reply = client.post("/recommend", json={"histories": [["i1"]], "k": 3, "candidates": ["i4", "i5"]})
    assert sorted(reply.json()["items"][0]) == ["i4", "i5"]
    per_row = {"histories": [["i1"], ["i2"]], "k": 3, "candidates": [["i4", "i5", "i6"], ["i7", "i8"]],
               "exclude": [["i5"], []]}
    reply = client.post("/recommend", json=per_row)
    assert reply.status_code == 200, reply.text
    local = rec.recommend(per_row["histories"], k=3, candidates=per_row["candidates"], exclude=per_row["exclude"])
    assert reply.json()["items"] == local.items and sorted(local.items[0]) == ["i4", "i6"]
    reply = client.post("/score", json={"history": ["i1", "i2"], "items": ["i3", "unknown", "i4"]})
    assert reply.status_code == 200
    scores = reply.json()["scores"]
    assert scores[1] is None
    np.testing.assert_allclose([scores[0], scores[2]], rec.score(["i1", "i2"], ["i3", "i4"]), rtol=1e-6)


@pytest.mark.parametrize(
    "path, payload, reason",
    [
        ("/recommend", {"histories": [[1, 2]]}, "valid string"),  # ids must be JSON strings
        ("/recommend", {"histories": ["i1", "i2"]}, "valid list"),  # a history, not a batch
        ("/recommend", {"histories": [["i1"]], "k": 0}, "greater than or equal to 1"),
        ("/recommend", {"histories": [["i1"]], "k": "ten"}, "valid integer"),
        ("/recommend", {"histories": []}, "at least 1 item"),
        ("/recommend", {"history": [["i1"]]}, "Field required"),
        ("/recommend", {"histories": [["i1"]], "colour": "red"}, "Extra inputs are not permitted"),
        ("/score", {"history": ["i1"], "items": []}, "at least 1 item"),
    ],
)
def test_malformed_requests_get_422_with_a_reason(served, path, payload, reason):
    _, client = served
    reply = client.post(path, json=payload)
    assert reply.status_code == 422
    assert reason in reply.text


def test_policy_errors_get_400_with_the_reason(small_artifact):
    from recsys.inference.http import create_app

    strict = Recommender.load(small_artifact, unknown="raise", empty="raise")
    with running_server(create_app(strict)) as url, _client(url) as client:
        reply = client.post("/recommend", json={"histories": [["i1"], ["ghost"]]})
        assert reply.status_code == 400 and "unknown item id 'ghost'" in reply.json()["detail"]
        reply = client.post("/score", json={"history": [], "items": ["i1"]})
        assert reply.status_code == 400 and "no known item" in reply.json()["detail"]
        assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422


def test_recsys_serve_command_answers_on_loopback(small_artifact):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("recsys")
    proc = subprocess.Popen(
        [str(exe), "serve", str(small_artifact), "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "recsys serve did not come up in 60 s"
                time.sleep(0.2)
        assert reply.json()["status"] == "ok"
        reply = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"histories": [["i3"]], "k": 2}, timeout=10,
                           trust_env=False)
        assert reply.status_code == 200 and len(reply.json()["items"][0]) == 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_next_action_endpoint(served, zoo_run, tmp_path):
    from recsys.cli import main
    from recsys.inference.http import create_app

    _, client = served
    reply = client.post("/next_action", json={"history": ["i1"]})
    assert reply.status_code == 501 and "action head" in reply.json()["detail"]
    out = tmp_path / "zoo"
    assert main(["export", str(zoo_run), "--out", str(out), "--no-popularity"]) == 0
    rec = Recommender.load(out, empty="raise")
    with running_server(create_app(rec)) as url, _client(url) as zoo_client:
        body = {"history": ["item01", "item02"], "actions": ["view", "cart"]}
        reply = zoo_client.post("/next_action", json=body)
        assert reply.status_code == 200, reply.text
        expected = rec.next_action(["item01", "item02"], ["view", "cart"])
        assert reply.json()["probabilities"] == pytest.approx(expected.probabilities)
        reply = zoo_client.post("/recommend", json={"histories": [["item01"]], "actions": [["view", "buy"]]})
        assert reply.status_code == 400 and "2 entries for a history of 1" in reply.json()["detail"]
        reply = zoo_client.post("/recommend", json={"histories": [["item01"]]})
        assert reply.status_code == 400 and "reads the action type" in reply.json()["detail"]
