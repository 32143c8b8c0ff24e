"""Authentication, TLS, limits and secrets, against real collector and agent processes.

Each refusal is checked as docs/api.md says (status, reason) and the logs are
searched for every secret afterwards.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import socketserver
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from roomwatch.core.wire import Batch, SampleRecord, encode_batch
from tests.conftest import TOKENS, CollectorHandle, start_collector
from tests.helpers import RoomwatchProcess, free_port, http_json, metric_value, wait_for, write_yaml
from tests.tlsutil import CA

T = "roomwatch_temperature_celsius"


def _body(agent: str = "agent-a", seq: int = 1, n: int = 2) -> bytes:
    now = int(time.time() * 1000)
    return encode_batch(Batch(agent, seq, [SampleRecord(T, {"device": f"t{i}"}, 20.0 + i, now) for i in range(n)], [],
                              now))


def _post(url: str, body: bytes, token: str | None, gz: bool = True) -> tuple[int, dict[str, str], dict[str, Any]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/api/v1/push", body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- TLS

class TLSCollector:
    def __init__(self, tmp: Path, ca: CA, client_ca: Path | None = None, name: str = "tls-collector"):
        server = ca.issue("server", "localhost", server=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        conf = {"listen": f"127.0.0.1:{self.port}", "storage": str(tmp / f"{name}.db"),
                "tls": {"cert_file": str(server.cert), "key_file": str(server.key),
                        **({"client_ca_file": str(client_ca)} if client_ca else {})},
                "agents": [{"id": a, "token": t} for a, t in TOKENS.items()], "agent_timeout": "3s"}
        self.proc = RoomwatchProcess(["collector", "-c", str(write_yaml(tmp / f"{name}.yaml", conf))], tmp / f"{name}.log")
        self.ctx = ssl.create_default_context(cafile=str(ca.path))

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, context=self.ctx, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_ready(self) -> None:
        wait_for(lambda: self.get("/readyz")["status"] == "ready", proc=self.proc.proc, what="TLS collector")

    def agents(self) -> dict[str, Any]:
        return {a["id"]: a for a in self.get("/api/v1/agents")["agents"]}


def test_agent_verifies_the_collector_certificate(tmp_path: Path, agent_factory: Any) -> None:
    ca, other = CA(tmp_path, "room CA"), CA(tmp_path, "someone else")
    c = TLSCollector(tmp_path, ca)
    try:
        c.wait_ready()
        bad, _ = agent_factory(c.url, "agent-a", collector={"tls": {"ca_file": str(other.path)}})
        agent_factory(c.url, "agent-b", collector={"tls": {"ca_file": str(ca.path)}})
        wait_for(lambda: c.agents()["agent-b"]["up"], timeout=20, what="agent-b pushing over TLS")
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in bad.log(), timeout=20, what="agent-a refusing the certificate")
        assert c.agents()["agent-a"]["last_push"] is None
        assert "cannot push to the collector" in bad.log()
    finally:
        c.proc.stop()


def test_client_certificate_mode_rejects_an_agent_without_one(tmp_path: Path, agent_factory: Any) -> None:
    ca = CA(tmp_path, "room CA")
    agents_ca = CA(tmp_path, "agents CA")
    client = agents_ca.issue("agent-b", "agent-b", server=False)
    c = TLSCollector(tmp_path, ca, client_ca=agents_ca.path)
    admin = agents_ca.issue("admin", "admin", server=False)
    c.ctx.load_cert_chain(str(admin.cert), str(admin.key))
    try:
        c.wait_ready()
        nocert, _ = agent_factory(c.url, "agent-a", collector={"tls": {"ca_file": str(ca.path)}})
        agent_factory(c.url, "agent-b", collector={"tls": {"ca_file": str(ca.path), "cert_file": str(client.cert),
                                                           "key_file": str(client.key)}})
        wait_for(lambda: c.agents()["agent-b"]["up"], timeout=20, what="agent-b pushing with its certificate")
        wait_for(lambda: "cannot push to the collector" in nocert.log(), timeout=20, what="agent-a refused")
        assert c.agents()["agent-a"]["last_push"] is None
        # A bare TLS client without a certificate does not get an HTTP answer at all.
        bare = ssl.create_default_context(cafile=str(ca.path))
        with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)), \
                urllib.request.urlopen(c.url + "/readyz", context=bare, timeout=5) as resp:
            resp.read()
    finally:
        c.proc.stop()


# ----------------------------------------------------------- refusals, limits, slow clients

@pytest.fixture
def strict(tmp_path: Path) -> Any:
    c = start_collector(tmp_path, body_timeout="2s", idle_timeout="2s", max_body="64KiB",
                        rate_limit={"per_agent": 1000, "per_agent_burst": 1000, "per_address": 1000,
                                    "per_address_burst": 1000})
    yield c
    c.proc.stop()


@pytest.mark.peer
def test_each_refusal_as_the_contract_says(strict: CollectorHandle) -> None:
    url = strict.url
    assert _post(url, _body(), None)[0] == 401
    wrong = "wrong-token-zzzzzzzzzzzz"
    status, headers, doc = _post(url, _body(), wrong)
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, doc = _post(url, _body(agent="agent-b"), TOKENS["agent-a"])
    assert status == 403 and "agent-b" in doc["error"]
    assert _post(url, _body(seq=5), TOKENS["agent-a"])[2] == {"accepted": 2, "duplicate": False}
    assert _post(url, _body(seq=5), TOKENS["agent-a"])[2] == {"accepted": 0, "duplicate": True}  # replay
    assert _post(url, b"x" * 70_000, TOKENS["agent-a"], gz=False)[0] == 413
    deep = b'{"agent":"agent-a","seq":9,"samples":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _, doc = _post(url, gzip.compress(deep), TOKENS["agent-a"])
    assert status == 400 and "nested too deeply" in doc["error"]
    log = strict.proc.log()
    assert "unknown token" in log and "tried to push as 'agent-b'" in log
    for secret in (wrong, *TOKENS.values()):
        assert secret not in log
    assert strict.proc.alive()


@pytest.mark.peer
def test_slow_body_gets_408_and_slow_headers_are_cut(strict: CollectorHandle) -> None:
    # slowloris on the body: headers complete, body trickles
    s = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    s.sendall(f"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['agent-a']}\r\n"
              "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode())
    s.sendall(b'{"agent": ')
    s.settimeout(10)  # the bound: the 408 must come before this socket timeout (body_timeout is 2s)
    answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    s.close()
    # slowloris on the headers: never finishing them gets the connection closed after idle_timeout
    s = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    s.sendall(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\n")
    closed = False  # within 40 × 0.25 s of trickling, far above idle_timeout
    try:
        for _ in range(40):
            s.sendall(b"X")
            s.settimeout(0.25)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    s.close()
    assert closed
    assert "body not received within 2s" in strict.proc.log()


@pytest.mark.peer
def test_rate_limits_per_address_and_per_agent(tmp_path: Path) -> None:
    c = start_collector(tmp_path, rate_limit={"per_agent": 1, "per_agent_burst": 3, "per_address": 1000,
                                              "per_address_burst": 1000})
    try:
        codes = [_post(c.url, _body(seq=i), TOKENS["agent-a"]) for i in range(1, 8)]
        assert [s for s, _, _ in codes[:3]] == [200, 200, 200]
        limited = [(s, h) for s, h, _ in codes[3:] if s == 429]
        assert limited and all(int(h["Retry-After"]) >= 1 for _, h in limited)
        assert _post(c.url, _body(agent="agent-b", seq=1), TOKENS["agent-b"])[0] == 200  # another agent is not affected
    finally:
        c.proc.stop()
    c = start_collector(tmp_path, name="c2", rate_limit={"per_address": 1, "per_address_burst": 2})
    try:
        codes = [_post(c.url, _body(seq=i), "no-such-token-xxxxxxxx")[0] for i in range(6)]
        # guessing tokens from one address is slowed down before the token is even checked
        assert codes[:2] == [401, 401] and 429 in codes[2:]
        assert metric_value(c.metrics(), "roomwatch_collector_pushes_total", code="429") >= 1
    finally:
        c.proc.stop()


def test_agent_honours_retry_after(tmp_path: Path, agent_factory: Any) -> None:
    c = start_collector(tmp_path, rate_limit={"per_agent": 0.2, "per_agent_burst": 1})  # Retry-After: 5
    try:
        agent, _ = agent_factory(c.url, collector={"push_interval": "300ms", "backoff_max": "500ms"})

        def counts() -> tuple[float, float]:
            text = c.metrics()
            return (metric_value(text, "roomwatch_collector_pushes_total", code="200") or 0,
                    metric_value(text, "roomwatch_collector_pushes_total", code="429") or 0)

        wait_for(lambda: counts()[0] >= 3, timeout=60, what="three accepted pushes")
        accepted, refused = counts()
        # The bucket refills one push per 5 s. Honouring Retry-After, each refusal is followed by a 5 s wait and
        # then an accepted push: about one refusal per accepted push, however slow the machine. Retrying on its
        # own 0.5 s backoff instead, the agent would be refused about ten times per accepted push.
        assert refused <= accepted + 1, (accepted, refused)
        assert "slow down" in agent.log()
    finally:
        c.proc.stop()


# ---------------------------------------------------------------------------- secrets

class _EchoAuth(BaseHTTPRequestHandler):
    """A remote-write endpoint that refuses with 401 and (carelessly) echoes the credentials back."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = f"bad credentials: {self.headers.get('Authorization')}".encode()
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _UpsdDenies(socketserver.StreamRequestHandler):
    """A upsd that refuses the password (NUT network protocol: OK / ERR ACCESS-DENIED)."""

    def handle(self) -> None:
        for line in self.rfile:
            word = line.split(b" ", 1)[0].strip()
            answer = b"OK\n" if word == b"USERNAME" else b"ERR ACCESS-DENIED\n"
            self.wfile.write(answer)


def test_no_secret_in_any_log_line_or_metric(tmp_path: Path, agent_factory: Any) -> None:
    from roomwatch.agent.config import load_agent_config
    from roomwatch.collector.config import load_collector_config
    from roomwatch.core.configbase import iter_secret_values

    echo = HTTPServer(("127.0.0.1", 0), _EchoAuth)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    upsd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _UpsdDenies)
    upsd.daemon_threads = True
    threading.Thread(target=upsd.serve_forever, daemon=True).start()
    nut_password = "nut-password-secret-555"
    rw_token = "rw-bearer-secret-123456"
    rw_password = "basic-password-secret-987"
    c = start_collector(tmp_path, log_level="debug", remote_write=[
        {"name": "echo1", "url": f"http://127.0.0.1:{echo.server_port}/w", "bearer_token": rw_token},
        {"name": "echo2", "url": f"http://127.0.0.1:{echo.server_port}/w",
         "basic_auth": {"username": "u", "password": rw_password}}])
    try:
        good, agent_url = agent_factory(c.url, "agent-a", agent={"log_level": "debug"}, devices=[
            {"name": "ups1", "driver": "nut", "port": upsd.server_address[1], "ups": "ups", "username": "monitor",
             "password": nut_password, "interval": "1s"}])
        bad, _ = agent_factory(c.url, "agent-b", agent={"log_level": "debug"},
                               collector={"token": "agent-b-wrong-token-secret"})
        wait_for(lambda: metric_value(c.metrics(), "roomwatch_collector_remote_write_samples_total", endpoint="echo2",
                                      result="rejected"), timeout=20, what="remote write refusals")
        wait_for(lambda: "HTTP 401" in bad.log(), timeout=20, what="agent-b refused")
        wait_for(lambda: "ups1 is down" in good.log(), timeout=20, what="the NUT login refused")
        metrics = c.metrics() + urllib.request.urlopen(agent_url + "/metrics", timeout=5).read().decode()
        agents_json = json.dumps(http_json(c.url + "/api/v1/agents"))
    finally:
        good.stop()
        bad.stop()
        c.proc.stop()
        echo.shutdown()
        echo.server_close()
        upsd.shutdown()
        upsd.server_close()
    secrets = set(iter_secret_values(load_collector_config(str(c.config))))
    for path in tmp_path.glob("agent*.yaml"):
        secrets |= set(iter_secret_values(load_agent_config(str(path))))
    assert {rw_token, rw_password, nut_password, "agent-b-wrong-token-secret", *TOKENS.values()} <= secrets
    logs = c.proc.log() + good.log() + bad.log()
    assert "refused" in logs and "***" in logs  # the echoed credentials were redacted, not printed
    for secret in secrets:
        assert secret not in logs, f"a secret reached a log line: {secret[:4]}…"
        assert secret not in metrics and secret not in agents_json


def test_listens_on_loopback_by_default(tmp_path: Path, collector: CollectorHandle) -> None:
    import psutil

    from roomwatch.agent.config import AgentSection
    from roomwatch.collector.config import CollectorConfig

    assert CollectorConfig().listen.startswith("127.0.0.1:")
    assert (AgentSection().listen or "").startswith("127.0.0.1:")
    conns = [c for c in psutil.Process(collector.proc.proc.pid).net_connections("inet") if c.status == "LISTEN"]
    assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns)
