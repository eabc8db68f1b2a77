"""Across machines, TLS: a dispatcher served over HTTPS, runners that verify it (a CA
file or a pinned fingerprint) and refuse one they cannot trust, saying why, and the
operator client that verifies it too. The certificates are made at test time with the
``openssl`` command line."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from fifoflow.api.client import ConnectError, DispatcherClient
from fifoflow.runner.tls import certificate_fingerprint

from ..dispatcher.test_dispatcher import DispatcherProcess, linked_id, runner_status, wait_until
from .helpers import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def make_certificate(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    cert, key = where / f"{name}.pem", where / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class TlsDispatcher(DispatcherProcess):
    def __init__(self, state_dir: Path, cert: Path, key: Path) -> None:
        super().__init__(state_dir)
        self.cert, self.key = cert, key

    def command(self) -> list[str]:
        return [*super().command(), "--certfile", str(self.cert), "--keyfile", str(self.key)]

    def api(self, method: str, path: str, **kw: Any) -> Any:
        token = (self.state_dir / "token").read_text().strip()
        response = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(self.cert)),
            timeout=30,
            **kw,
        )
        response.raise_for_status()
        return response.json()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: make_certificate(tmp_path, name) for name in ("dispatcher", "other")}


@pytest.fixture
def dispatcher(tmp_path: Path, certs: dict[str, tuple[Path, Path]]) -> Iterator[TlsDispatcher]:
    proc = TlsDispatcher(tmp_path / "dispatcher", *certs["dispatcher"])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _refusal(runner: ServerProcess) -> tuple[int, str]:
    """The exit status and output of a runner that refused to link (it exits by itself)."""
    status = runner.wait_exit(timeout=30)
    return status, runner.output()


def test_the_dispatcher_serves_https_and_prints_its_fingerprint(
    dispatcher: TlsDispatcher, certs: dict[str, tuple[Path, Path]]
) -> None:
    assert dispatcher.url.startswith("https://127.0.0.1:")
    fingerprint = certificate_fingerprint(certs["dispatcher"][0])
    assert f"TLS certificate sha256: {fingerprint}" in "\n".join(dispatcher.lines)
    # what openssl says the fingerprint is
    shown = subprocess.run(
        ["openssl", "x509", "-in", str(certs["dispatcher"][0]), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert shown.strip().split("=", 1)[1] == fingerprint
    # plain HTTP is not served on that port
    with pytest.raises(httpx.TransportError):
        httpx.get(dispatcher.url.replace("https://", "http://") + "/runners", timeout=5)


@pytest.mark.parametrize("trust", ["ca", "fingerprint"])
def test_a_runner_joins_with_a_ca_or_a_pinned_fingerprint(
    tmp_path: Path, dispatcher: TlsDispatcher, certs: dict[str, tuple[Path, Path]], trust: str
) -> None:
    cert = certs["dispatcher"][0]
    how = (
        ["--dispatcher-ca", str(cert)]
        if trust == "ca"
        else ["--dispatcher-fingerprint", certificate_fingerprint(cert).replace(":", "").lower()]
    )
    runner = ServerProcess(
        tmp_path / "runner",
        "--dispatcher", dispatcher.url,
        "--registration-token", dispatcher.token(),
        *how,
    )  # fmt: skip
    runner.start()
    try:
        runner_id = linked_id(runner)
        wait_until("the runner ready", lambda: runner_status(dispatcher, runner_id) == "ready")
    finally:
        assert runner.stop() == 0


@pytest.mark.parametrize("trust", ["wrong fingerprint", "wrong ca", "no ca"])
def test_a_runner_refuses_a_dispatcher_it_cannot_trust(
    tmp_path: Path, dispatcher: TlsDispatcher, certs: dict[str, tuple[Path, Path]], trust: str
) -> None:
    other = certs["other"][0]
    how = {
        "wrong fingerprint": ["--dispatcher-fingerprint", certificate_fingerprint(other)],
        "wrong ca": ["--dispatcher-ca", str(other)],
        "no ca": [],
    }[trust]
    token = dispatcher.token()
    runner = ServerProcess(
        tmp_path / "runner", "--dispatcher", dispatcher.url, "--registration-token", token, *how
    )
    runner.start()
    try:
        status, output = _refusal(runner)
    finally:
        runner.kill()
    assert status == 2, output
    assert "its TLS certificate is not trusted" in output, output
    if trust == "wrong fingerprint":
        assert certificate_fingerprint(certs["dispatcher"][0]) in output
        assert certificate_fingerprint(other) in output
    else:
        assert "certificate verify failed" in output, output
    # the token was never sent: the dispatcher registered nobody and the token still works
    assert dispatcher.api("GET", "/runners") == []
    assert [e for e in dispatcher.api("GET", "/events") if e["kind"] == "registered"] == []


def test_the_operator_client_verifies_the_dispatcher(
    tmp_path: Path, dispatcher: TlsDispatcher, certs: dict[str, tuple[Path, Path]]
) -> None:
    token = (dispatcher.state_dir / "token").read_text().strip()
    with DispatcherClient(dispatcher.url, token, ca=certs["dispatcher"][0]) as client:
        assert client.list_runners() == []
    with (
        DispatcherClient(dispatcher.url, token) as client,
        pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.list_runners()
    with (
        DispatcherClient(dispatcher.url, token, ca=certs["other"][0]) as client,
        pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.list_runners()
    # the command line: --ca, and a clear failure without it
    base = [sys.executable, "-m", "fifoflow.api", "dispatcher", "runners", "--json",
            "--url", dispatcher.url, "--token-file", str(dispatcher.state_dir / "token")]  # fmt: skip
    ok = subprocess.run(
        [*base, "--ca", str(certs["dispatcher"][0])], capture_output=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == b"[]"
    refused = subprocess.run(base, capture_output=True, timeout=60)
    assert refused.returncode == 1
    assert b"CERTIFICATE_VERIFY_FAILED" in refused.stderr


def test_servers_warn_when_exposed_without_tls(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    """Bound beyond loopback (0.0.0.0 here) without TLS, both servers say so loudly."""
    plain = DispatcherProcess(tmp_path / "d-plain")
    plain.command = lambda: [*DispatcherProcess.command(plain), "--host", "0.0.0.0"]  # type: ignore[method-assign]
    runner = ServerProcess(tmp_path / "r-plain", "--host", "0.0.0.0")
    secure = ServerProcess(tmp_path / "r-tls", "--host", "0.0.0.0",
                           "--certfile", str(certs["other"][0]), "--keyfile", str(certs["other"][1]))  # fmt: skip
    try:
        for proc, what in ((plain, "dispatcher"), (runner, "runner"), (secure, "runner")):
            proc.start()
            proc.stop()
            text = "\n".join(proc.lines)
            if proc is secure:
                assert "WITHOUT TLS" not in text
                assert proc.url.startswith("https://")
            else:
                assert f"WARNING: the {what} serves on 0.0.0.0 WITHOUT TLS" in text, text
    finally:
        for proc in (plain, runner, secure):
            proc.kill()


def test_local_runners_pin_their_tls_dispatcher(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    """The local backend hands its runners the dispatcher's fingerprint."""
    proc = TlsDispatcher(tmp_path / "dispatcher", *certs["dispatcher"])
    proc.command = lambda: [*TlsDispatcher.command(proc), "--local-runners", "1"]  # type: ignore[method-assign]
    proc.start()
    try:
        wait_until(
            "the local runner ready",
            lambda: [r["status"] for r in proc.api("GET", "/runners")] == ["ready"],
        )
    finally:
        proc.stop()


def test_runner_health_over_https_with_its_certificate(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = certs["other"]
    runner = ServerProcess(tmp_path / "runner", "--certfile", str(cert), "--keyfile", str(key))
    runner.start()
    try:
        assert runner.url.startswith("https://127.0.0.1:")
        base = [sys.executable, "-m", "fifoflow.api", "runner", "health",
                "--state-dir", str(tmp_path / "runner")]  # fmt: skip
        ok = subprocess.run([*base, "--ca", str(cert)], capture_output=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        refused = subprocess.run(base, capture_output=True, timeout=60)
        assert refused.returncode == 1
        assert b"CERTIFICATE_VERIFY_FAILED" in refused.stderr
    finally:
        runner.stop()


async def test_a_page_connects_to_a_tls_dispatcher_over_wss(dispatcher: TlsDispatcher) -> None:
    """A web page's socket over wss://, and the page's runner (which the dispatcher keeps
    for it and links to itself) pins the dispatcher's certificate: the page is welcomed."""
    import orjson
    import trio
    import trio_websocket

    client_token = dispatcher.api("GET", "/client-token")["token"]
    context = ssl.create_default_context(cafile=str(dispatcher.cert))
    url = dispatcher.url.replace("https", "wss") + f"/client/ws?token={client_token}&page=p1"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket_url(nursery, url, ssl_context=context)
            welcome = orjson.loads(await ws.get_message())
            assert welcome["op"] == "welcome", welcome
            assert welcome["runner"].startswith("r-")
            await ws.send_message('{"op": "bye"}')
            nursery.cancel_scope.cancel()
