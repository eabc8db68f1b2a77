"""The limit: a python echo over two FIFOs with no fifoflow in the way.

The echo process reads whatever the pipe holds, decodes every line with orjson and
encodes it back (the least work any JSON-lines runtime does), and writes the batch in one
call. :func:`run`: the bench process writes batches of lines from a thread and reads the
echoes (throughput). :func:`round_trip`: one line at a time at a light fixed rate, the
time from the write to the echo read back (the latency of two pipe crossings and two
wake-ups, the floor under a cross-runtime hop).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ECHO = r"""
import os, sys, orjson
fin = os.open(sys.argv[1], os.O_RDONLY)
fout = os.open(sys.argv[2], os.O_WRONLY)
buf = b""
loads, dumps = orjson.loads, orjson.dumps
while True:
    data = os.read(fin, 1 << 20)
    if not data:
        break
    buf += data
    end = buf.rfind(b"\n")
    if end < 0:
        continue
    lines = buf[:end].split(b"\n")
    buf = buf[end + 1:]
    out = b"".join([dumps(loads(line)) + b"\n" for line in lines])
    view = memoryview(out)
    while view:
        view = view[os.write(fout, view):]
"""


def run(n: int = 300_000, batch: int = 1000) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fifoflow-bench-") as tmp:
        to_echo, from_echo = Path(tmp, "to"), Path(tmp, "from")
        os.mkfifo(to_echo)
        os.mkfifo(from_echo)
        proc = subprocess.Popen([sys.executable, "-c", ECHO, str(to_echo), str(from_echo)])
        try:
            wfd = os.open(to_echo, os.O_WRONLY)
            rfd = os.open(from_echo, os.O_RDONLY)
            line = orjson.dumps({"n": 0, "payload": "x" * 16}) + b"\n"
            chunk = line * batch
            size = len(line)

            def writer() -> None:
                for _ in range(n // batch):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(wfd, view) :]
                os.close(wfd)

            start = time.perf_counter()
            thread = threading.Thread(target=writer)
            thread.start()
            received = 0
            while received < (n // batch) * batch * size:
                data = os.read(rfd, 1 << 20)
                if not data:
                    break
                received += len(data)
            elapsed = time.perf_counter() - start
            thread.join()
            os.close(rfd)
        finally:
            proc.wait(timeout=10)
    msgs = received // size
    return {"msgs_per_s": msgs / elapsed, "mb_per_s": received / elapsed / 1e6, "messages": msgs}


def round_trip(samples: int = 300, rate: float = 500.0) -> dict[str, float]:
    """Round trips of one line through the echo at ``rate`` lines/s: p50/p99/max in us."""
    with tempfile.TemporaryDirectory(prefix="fifoflow-bench-") as tmp:
        to_echo, from_echo = Path(tmp, "to"), Path(tmp, "from")
        os.mkfifo(to_echo)
        os.mkfifo(from_echo)
        proc = subprocess.Popen([sys.executable, "-c", ECHO, str(to_echo), str(from_echo)])
        try:
            wfd = os.open(to_echo, os.O_WRONLY)
            rfd = os.open(from_echo, os.O_RDONLY)
            line = orjson.dumps({"n": 0, "payload": "x" * 16}) + b"\n"
            times = []
            for _ in range(samples + 50):
                start = time.perf_counter_ns()
                os.write(wfd, line)
                got = 0
                while got < len(line):
                    select.select([rfd], [], [])
                    got += len(os.read(rfd, 1 << 16))
                times.append((time.perf_counter_ns() - start) / 1000)
                time.sleep(1 / rate)  # a light fixed rate, not synchronization
            os.close(wfd)
            os.close(rfd)
        finally:
            proc.wait(timeout=10)
    lat = sorted(times[50:])
    return {
        "p50_us": lat[len(lat) // 2],
        "p99_us": lat[int(len(lat) * 0.99) - 1],
        "max_us": lat[-1],
    }
