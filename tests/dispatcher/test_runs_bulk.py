"""1000 runs submitted at once through a dispatcher with two local runners
(``--local-runners 2``): every one succeeds, each result recorded exactly once (one
result row and one terminal event per run), and both runners took runs."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from .test_dispatcher import DispatcherProcess, wait_until
from .test_runs import TERMINAL, terminal_events

if TYPE_CHECKING:
    from pathlib import Path


def test_1000_runs_through_two_local_runners_each_recorded_once(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "2",
    ]  # fmt: skip
    dispatcher.start()
    try:
        wait_until(
            "two local runners",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready"] * 2,
        )
        token = (dispatcher.state_dir / "token").read_text().strip()
        body = {
            "document": {
                "fifoflow": 1,
                "id": "double",
                "modules": [
                    {"id": "d", "runtime": "python",
                     "code": "def handle(msg, ctx):\n    return msg * 2\n"},
                ],
            },
        }  # fmt: skip
        with httpx.Client(
            base_url=dispatcher.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=8),
        ) as client:

            def submit(n: int) -> str:
                answer = client.post("/runs", json={**body, "inputs": [{"msg": n}]})
                assert answer.status_code == 201, answer.text
                return answer.json()["id"]  # type: ignore[no-any-return]

            # at once: eight clients side by side
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(submit, range(1000)))
            assert len(set(ids)) == 1000
            deadline = time.monotonic() + 45
            while True:
                listed = client.get("/runs", params={"state": "succeeded", "limit": 2000}).json()
                if len(listed) == 1000:
                    break
                assert time.monotonic() < deadline, f"{len(listed)} of 1000 runs succeeded"
                time.sleep(0.5)  # a poll interval (the REST API has no push)
            workers = set()
            for n, run_id in enumerate(ids[::50]):
                view = client.get(f"/runs/{run_id}").json()
                assert len(terminal_events(view)) == 1
                result = client.get(f"/runs/{run_id}/result").json()
                assert [o["msg"] for o in result["outputs"]] == [n * 50 * 2]
                workers.add(view["worker"])
        # each result recorded exactly once: one result row and one terminal event per run
        db = _db(dispatcher.state_dir)
        try:
            results = db.execute("SELECT run, COUNT(*) FROM run_results GROUP BY run").fetchall()
            assert len(results) == 1000
            assert {c for _, c in results} == {1}
            ends = db.execute(
                "SELECT run, COUNT(*) FROM run_events WHERE state IN (?, ?, ?, ?) GROUP BY run",
                tuple(TERMINAL),
            ).fetchall()
            assert len(ends) == 1000
            assert {c for _, c in ends} == {1}
            per_worker = db.execute(
                "SELECT worker, COUNT(*) FROM run_events WHERE state = 'succeeded' GROUP BY worker"
            ).fetchall()
            assert len(per_worker) == 2, per_worker  # both runners took runs
        finally:
            db.close()
    finally:
        assert dispatcher.stop() == 0


def _db(state_dir: Path) -> Any:
    return sqlite3.connect(state_dir / "dispatcher.sqlite3")
