"""The runner's control link to a dispatcher (the runner's side of its lifecycle).

1. Registration, once: a one-time token from the operator is traded for a runner id and a
   secret, kept in ``<state dir>/dispatcher.json`` (mode 0600) with the dispatcher's URL.
   A refused token is fatal (:class:`LinkRefused`): ``fifoflow runner serve`` exits 2.
2. Every (re)connection: ``hello`` with the id and secret (a refusal is fatal too), the
   hardware report — all of it the first time, then only what changed since the copy
   cached in ``<state dir>/hardware.json`` — and ``ready``.
3. Heartbeats every interval the dispatcher asks for. A dropped link is reopened with
   exponential backoff and jitter (0.2 s doubling up to 10 s), then step 2 again.
4. :meth:`DispatcherLink.sign_off` on shutdown.

Resource handling: the WebSocket and its tasks live inside :meth:`DispatcherLink.run`.
"""

from __future__ import annotations

import platform
import random
import shutil
import socket
from typing import TYPE_CHECKING, Any

import orjson
import psutil
import trio
import trio_websocket

from .errors import RunnerError
from .store import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

    from .service import Runner

__all__ = ["DispatcherLink", "LinkRefused", "collect_hardware"]

GiB = 1024**3


class LinkRefused(RunnerError):
    """The dispatcher refused this runner (bad token, unknown identity)."""

    code = "link_refused"


def collect_hardware(state_dir: Path, runtimes: list[str]) -> dict[str, Any]:
    """What placement needs to know; stable values only (totals, not current use)."""
    disk = shutil.disk_usage(state_dir)
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpus": psutil.cpu_count() or 1,
        "memoryGiB": round(psutil.virtual_memory().total / GiB, 1),
        "diskGiB": round(disk.total / GiB, 1),
        "runtimes": sorted(runtimes),
    }


class DispatcherLink:
    def __init__(
        self,
        url: str,
        runner: Runner,
        state_dir: Path,
        *,
        registration_token: str | None = None,
        name: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.runner = runner
        self.state_dir = state_dir
        self.registration_token = registration_token
        self.name = name or socket.gethostname()
        self.identity_path = state_dir / "dispatcher.json"
        self.hardware_path = state_dir / "hardware.json"
        self.runner_id: str | None = None
        self.connected = trio.Event()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._ids = 0

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/link"

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Register if needed, then keep the link up until cancelled. ``task_status`` gets
        the runner id once the first ``ready`` was accepted."""
        started = False
        delay = 0.2
        while True:
            try:
                async with trio_websocket.open_websocket_url(self.ws_url) as ws:
                    self._ws = ws
                    identity = await self._identity()
                    answer = await self._call(
                        "hello",
                        runnerId=identity["runnerId"],
                        secret=identity["secret"],
                        version=self.runner.version,
                    )
                    self.runner_id = identity["runnerId"]
                    await self._report_hardware()
                    await self._call("ready")
                    self.connected.set()
                    delay = 0.2
                    if not started:
                        started = True
                        task_status.started(self.runner_id)
                    while True:
                        await trio.sleep(float(answer["heartbeat"]))
                        await self._call("heartbeat")
            except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
                self._ws = None
                self.connected = trio.Event()
                if (
                    not started
                    and self.registration_token is not None
                    and not self.identity_path.exists()
                ):
                    # Never registered: nothing to keep trying with.
                    raise LinkRefused(f"cannot reach the dispatcher at {self.url}: {exc}") from None
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
            finally:
                self._ws = None

    async def sign_off(self) -> None:
        """Tell the dispatcher this runner stops (best effort, bounded)."""
        if self._ws is None:
            return
        with trio.move_on_after(2):
            try:
                await self._call("signoff")
            except (trio_websocket.ConnectionClosed, LinkRefused, OSError):
                pass

    # ------------------------------------------------------------------ steps

    async def _identity(self) -> dict[str, str]:
        try:
            identity = orjson.loads(self.identity_path.read_bytes())
            if identity.get("url") == self.url:
                return identity
        except (OSError, orjson.JSONDecodeError):
            pass
        if not self.registration_token:
            raise LinkRefused(
                f"this runner is not registered with {self.url}: pass --registration-token "
                "(get one with: fifoflow dispatcher token)"
            )
        answer = await self._call("register", token=self.registration_token, name=self.name)
        identity = {"url": self.url, "runnerId": answer["runnerId"], "secret": answer["secret"]}
        atomic_write(self.identity_path, orjson.dumps(identity), mode=0o600)
        return identity

    async def _report_hardware(self) -> None:
        current = collect_hardware(self.state_dir, list(self.runner.runtimes))
        try:
            cached = orjson.loads(self.hardware_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            cached = None
        if cached is None:
            await self._call("hardware", full=current)
        else:
            changes = {k: v for k, v in current.items() if cached.get(k) != v}
            if changes:
                await self._call("hardware", changes=changes)
        atomic_write(self.hardware_path, orjson.dumps(current), mode=0o600)

    async def _call(self, method: str, **params: Any) -> Any:
        ws = self._ws
        assert ws is not None
        self._ids += 1
        await ws.send_message(
            orjson.dumps(
                {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
            ).decode()
        )
        while True:
            reply = orjson.loads(await ws.get_message())
            if reply.get("id") == self._ids:
                break
        if "error" in reply:
            raise LinkRefused(f"the dispatcher refused {method}: {reply['error']['message']}")
        return reply["result"]
