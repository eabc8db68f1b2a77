"""What every ``fifoflow`` command shares: exit codes, printing, reading JSON and
``MODULE.PORT`` arguments, running a command under trio, and the options and client of
the commands that call a runner (``--url``, ``--token-file``).

Exit status: 0 done; 1 failed (a module raised, the server refused: its message is
printed); 2 bad usage or input; 3 the runner cannot be reached; 130 interrupted (Ctrl-C).
Two commands keep their own: ``runner health`` answers 0 or 1 (for health checks), and
the ``dispatcher`` client commands exit 1 when no dispatcher answers.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.api.client import ApiError, ConnectError, RunnerClient
from fifoflow.api.client.errors import leaves
from fifoflow.api.common.auth import TokenError, read_token
from fifoflow.api.common.places import DEFAULT_PORT, default_state_dir
from fifoflow.runner.tls import TlsSettingsError

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "JsonFormatter",
    "Usage",
    "add_client_options",
    "add_log_format_option",
    "err",
    "flow_problems",
    "out",
    "parse_json",
    "parse_port",
    "print_json",
    "print_table",
    "run_client",
    "run_until_interrupted",
    "runner_client",
    "serve_logging",
    "stdin_lines",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class Usage(Exception):
    """Bad usage or input found while a command runs (exit 2; the message says what)."""


# ---------------------------------------------------------------------- printing


def err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_json(value: Any) -> None:
    out(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows of cells (the first: the headings) in left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def flow_problems(path: object, exc: Exception) -> str:
    """``PATH: invalid flow`` and every problem of a flow file, one indented line each."""
    return f"{path}: invalid flow\n" + "\n".join(f"  {line}" for line in str(exc).splitlines())


#: a LogRecord's own attributes: anything else on a record came in ``extra``
_RECORD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and every
    ``extra`` field of the call (``log.info("started", extra={"run": ..., "attempt": 1})``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _RECORD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...`` (the ``extra`` fields at the end)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _RECORD]
        return f"{text} {' '.join(extra)}" if extra else text


def serve_logging(log_format: str = "text") -> None:
    """Warnings and errors of a server's components on stderr, and the runs' lifecycle
    lines (the ``fifoflow.runs`` logger at INFO: claimed, started, progress, lease
    renewed/lost, finished); ``log_format`` ``json``: one JSON object per line."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("fifoflow.runs").setLevel(logging.INFO)


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("FIFOFLOW_LOG_FORMAT", "text"),
        help="stderr log lines as text or one JSON object per line ($FIFOFLOW_LOG_FORMAT)",
    )


# ---------------------------------------------------------------------- arguments


def parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"fifoflow: {what} is not valid JSON: {exc}\n  value: {text!r}") from None


def parse_port(text: str) -> tuple[str, str]:
    """``MODULE[.PORT]`` -> ``(module, port)``; the port defaults to ``in``."""
    module, _, port = text.partition(".")
    return module, port or "in"


# ---------------------------------------------------------------------- running


def run_until_interrupted(
    main: Callable[[argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
    *,
    on_interrupt: Callable[[], None],
) -> int:
    """``trio.run(main, args)``, whose answer is the exit status; after a Ctrl-C (also one
    a nursery wrapped in an exception group), ``on_interrupt()`` says what stopped, and
    the status is 130."""
    try:
        return trio.run(main, args)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        if not any(isinstance(exc, KeyboardInterrupt) for exc in leaves(group)):
            raise
    on_interrupt()
    return EXIT_INTERRUPTED


async def stdin_lines() -> AsyncIterator[bytes]:
    """stdin's lines, without their newline, as they arrive (a last line without a newline
    is not one). Resource handling: reads a copy of fd 0 that it closes when it ends;
    iterate under ``contextlib.aclosing`` so that a ``break`` closes it too."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while data := await stream.receive_some(65536):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line


# ---------------------------------------------------------------------- runner clients


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("FIFOFLOW_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
        help="the runner's URL (default: $FIFOFLOW_URL or %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get("FIFOFLOW_TOKEN_FILE"),
        help="file holding the bearer token (default: $FIFOFLOW_TOKEN_FILE or <state dir>/token)",
    )
    parser.add_argument(
        "--ca",
        metavar="PEM",
        default=os.environ.get("FIFOFLOW_CA"),
        help="verify an https:// runner with this CA or self-signed certificate ($FIFOFLOW_CA)",
    )


def runner_client(args: argparse.Namespace) -> RunnerClient:
    """The client that ``--url`` and ``--token-file`` (see :func:`add_client_options`) name."""
    token_file = Path(args.token_file) if args.token_file else default_state_dir() / "token"
    ca = Path(args.ca) if getattr(args, "ca", None) else None
    return RunnerClient(args.url, read_token(token_file), ca=ca)


def run_client(main: Callable[[], Awaitable[int]]) -> int:
    """Run a command that calls a runner; turn the usual failures into a message and an
    exit status."""
    try:
        return trio.run(main)
    except ApiError as exc:
        where = f" [{exc.field}]" if exc.field else ""
        err(f"fifoflow: {exc.message}{where} (HTTP {exc.status}, {exc.code})")
        for problem in exc.problems or ():
            err(f"  {problem['path'] or '(document)'}: {problem['message']}")
        return EXIT_FAILED
    except ConnectError as exc:
        err(f"fifoflow: {exc}\n  is a runner serving there? start one with: fifoflow runner serve")
        return EXIT_UNREACHABLE
    except (TokenError, Usage, TlsSettingsError) as exc:
        err(f"fifoflow: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """``--certfile``/``--keyfile``: what a server serves HTTPS with (both or neither)."""
    parser.add_argument("--certfile", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--keyfile", metavar="PEM", help="the certificate's private key")


def tls_files(args: argparse.Namespace) -> tuple[Path | None, Path | None] | None:
    """The certificate and key files given, or None (and the reason printed) when only
    one of the two was."""
    if bool(args.certfile) != bool(args.keyfile):
        err("fifoflow: --certfile and --keyfile go together")
        return None
    return (Path(args.certfile), Path(args.keyfile)) if args.certfile else (None, None)
