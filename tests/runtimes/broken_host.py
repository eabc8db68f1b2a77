"""A deliberately broken runtime host, for testing that the conformance kit catches it.

    python broken_host.py BREAKAGE <to-runtime> <from-runtime>

BREAKAGE: ``done-first`` acknowledges a delivery before writing its emits;
``no-protocol`` says hello without the protocol field; ``raw-msgs-first`` lists the
``raw`` feature but writes ``msgs`` before the other fields of an emit;
``raw-bad-body`` lists ``raw`` and, for a delivery holding the message ``"poison"``,
writes an emit in the raw layout whose body is not JSON; ``direct-ignored`` lists the
``direct`` feature but sends everything to the runner; ``counts-ignored`` lists
``counts`` but never reports any; ``counts-bad`` lists ``counts`` and adds to every
``done`` a ``local`` that is not a list of counts.
"""

import json
import os
import sys


def main() -> int:
    breakage, to_path, from_path = sys.argv[1:4]
    rfd = os.open(to_path, os.O_RDONLY)
    wfd = os.open(from_path, os.O_WRONLY)

    def send(*frames: dict) -> None:
        os.write(
            wfd, b"".join(json.dumps(f, separators=(",", ":")).encode() + b"\n" for f in frames)
        )

    hello = {
        "op": "hello",
        "protocol": 1,
        "runtime": "broken",
        "version": "0",
        "pid": os.getpid(),
        "features": [],
    }
    if breakage == "no-protocol":
        del hello["protocol"]
    if breakage in ("raw-msgs-first", "raw-bad-body"):
        hello["features"] = ["raw"]
    if breakage == "direct-ignored":
        hello["features"] = ["direct"]
    if breakage in ("counts-ignored", "counts-bad"):
        hello["features"] = ["counts"]
    send(hello)
    buf = b""
    while True:
        data = os.read(rfd, 65536)
        if not data:
            return 0
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            frame = json.loads(line)
            op = frame["op"]
            if op == "load":
                send({"op": "loaded", "module": frame["module"]})
            elif op == "deliver":
                emit = {
                    "op": "emit",
                    "module": frame["module"],
                    "port": "out",
                    "msgs": frame["msgs"],
                }
                if breakage == "raw-bad-body":  # the good ones in the raw layout
                    emit = {"op": "emit", "module": frame["module"], "port": "out"}
                    emit.update(n=len(frame["msgs"]), msgs=frame["msgs"])
                if breakage == "raw-msgs-first":
                    emit = {
                        "op": "emit",
                        "msgs": frame["msgs"],
                        "module": frame["module"],
                        "port": "out",
                        "n": len(frame["msgs"]),
                    }
                done = {"op": "done", "seq": frame["seq"]}
                if breakage == "counts-bad":
                    done["local"] = [["a", "out", "b", "in", -1], "lots"]
                if breakage == "raw-bad-body" and "poison" in frame["msgs"]:
                    head = f'{{"op":"emit","module":"{frame["module"]}","port":"out","n":1,'
                    os.write(wfd, head.encode() + b'"msgs":[1,,2]}\n')
                    send(done)
                    continue
                send(done, emit) if breakage == "done-first" else send(emit, done)
            elif op == "shutdown":
                send({"op": "bye"})
                return 0


if __name__ == "__main__":
    sys.exit(main())
