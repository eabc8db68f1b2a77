"""How the built-in hosts cut what they read into batches: a read that holds many
``deliver`` frames is answered frame group by frame group (outputs, then the ``done``
of those frames), so the runner routes the first frames' outputs and refills the window
while the host works on the rest (a pipeline, not one batch per read)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from fifoflow.runner.process import spawn_runtime
from fifoflow.runtimes.registry import discover

ECHO = {
    "python": "def handle(msg, ctx):\n    return msg\n",
    "node": "exports.handle = (msg, ctx) => msg;\n",
}


async def _answers(runtime: str, frames: int, per_frame: int) -> list[tuple[str, Any]]:
    """Send ``frames`` deliveries of ``per_frame`` messages in one write; what came
    back, in order: ("emit", [frame numbers of its messages]) and ("done", seq)."""
    manifest = discover()[runtime]
    got: list[tuple[str, Any]] = []
    outputs: list[Any] = []
    async with spawn_runtime(
        manifest.argv(), name=f"batching-{runtime}", on_log=lambda *_: None
    ) as proc:
        load = {
            "op": "load",
            "module": "f/echo",
            "code": ECHO[runtime],
            "filename": "echo",
            "config": {},
            "state": None,
            "timeout": 30,
        }
        route = {"op": "route", "routes": {"f/echo": {"out": {"local": [], "external": True}}}}
        await proc.send(orjson.dumps(load) + b"\n" + orjson.dumps(route) + b"\n")
        data = b"".join(
            orjson.dumps(
                {
                    "op": "deliver",
                    "seq": f + 1,
                    "module": "f/echo",
                    "port": "in",
                    "msgs": [{"f": f + 1, "i": i} for i in range(per_frame)],
                }
            )
            + b"\n"
            for f in range(frames)
        )
        await proc.send(data)
        with trio.fail_after(20):
            while not got or got[-1] != ("done", frames):
                lines = await proc.receive_lines()
                assert lines is not None, "the host went away"
                for line in lines:
                    frame = orjson.loads(line)
                    if frame["op"] == "emit":
                        outputs.extend(frame["msgs"])
                        got.append(("emit", sorted({m["f"] for m in frame["msgs"]})))
                    elif frame["op"] == "done":
                        got.append(("done", frame["seq"]))
                    else:
                        assert frame["op"] in ("loaded", "state"), frame
        await proc.send(b'{"op":"shutdown"}\n')
        with trio.fail_after(10):
            assert await proc.wait() == 0
    assert outputs == [{"f": f + 1, "i": i} for f in range(frames) for i in range(per_frame)]
    return got


@pytest.mark.parametrize("runtime", ["python"])
async def test_host_acknowledges_a_long_read_frame_by_frame(runtime: str) -> None:
    # three frames of 1000 messages (~20 KiB each) written at once: the host reads them
    # in one read, yet each frame's outputs and done leave before the next frame is
    # handled
    got = await _answers(runtime, 3, 1000)
    assert got == [
        ("emit", [1]),
        ("done", 1),
        ("emit", [2]),
        ("done", 2),
        ("emit", [3]),
        ("done", 3),
    ]


@pytest.mark.parametrize("runtime", ["python"])
async def test_host_handles_small_frames_of_one_read_as_one_batch(runtime: str) -> None:
    # small frames still share a batch: one emit per frame, one done for all of them
    got = await _answers(runtime, 5, 10)
    assert got[-1] == ("done", 5)
    assert [d for d in got if d[0] == "done"] == [("done", 5)]


HANG_AT_THIRD = (
    "import time\n"
    "def handle(msg, ctx):\n"
    "    if msg == 'hang':\n"
    "        time.sleep(60)\n"
    "    if msg == 'raise':\n"
    "        raise ValueError(msg)\n"
    "    return msg\n"
)


async def _until(proc: Any, op: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not frames or frames[-1]["op"] != op:
            lines = await proc.receive_lines()
            assert lines is not None, "the host went away"
            frames.extend(orjson.loads(line) for line in lines)
    return frames


async def test_python_host_names_the_message_it_is_stuck_on_or_failed_on() -> None:
    # the watchdog reads the position of the message being handled from the loop's
    # iterator: errors and the hung report name the right message and index
    manifest = discover()["python"]
    async with spawn_runtime(manifest.argv(), name="batching-hang", on_log=lambda *_: None) as proc:
        load = {
            "op": "load",
            "module": "f/h",
            "code": HANG_AT_THIRD,
            "filename": "h",
            "config": {},
            "state": None,
            "timeout": 0.3,
        }
        route = {"op": "route", "routes": {"f/h": {"out": {"local": [], "external": True}}}}
        await proc.send(orjson.dumps(load) + b"\n" + orjson.dumps(route) + b"\n")
        assert (await _until(proc, "loaded"))[-1] == {"op": "loaded", "module": "f/h"}

        def deliver(seq: int, msgs: list[Any]) -> bytes:
            frame = {"op": "deliver", "seq": seq, "module": "f/h", "port": "in", "msgs": msgs}
            return orjson.dumps(frame) + b"\n"

        await proc.send(deliver(6, ["a", "raise", "b", "raise"]))
        frames = await _until(proc, "done")
        errors = [(f["msg"], f["seq"], f["error"]["type"]) for f in frames if f["op"] == "error"]
        assert errors == [("raise", 6, "ValueError")] * 2
        assert [m for f in frames if f["op"] == "emit" for m in f["msgs"]] == ["a", "b"]

        await proc.send(deliver(7, ["a", "raise", "b", "c", "hang", "d"]))
        hung = (await _until(proc, "hung"))[-1]
    assert (hung["module"], hung["seq"], hung["index"], hung["msg"]) == ("f/h", 7, 4, "hang")
