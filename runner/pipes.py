"""The two named pipes of one runtime instance (PROTOCOL.md section 1).

Resource handling: :class:`FifoPair` owns a private directory (mode 0700) holding
``to-runtime`` and ``from-runtime`` (mode 0600) and the runner's two file descriptors;
:meth:`FifoPair.close` closes both and removes the directory. It is idempotent.

Error handling: opening the write end retries ``ENXIO`` (the host has not opened its read
end yet) until ``deadline``; any other ``OSError`` propagates.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import trio

__all__ = ["FifoPair", "grow_pipe"]


class FifoPair:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.to_runtime = directory / "to-runtime"
        self.from_runtime = directory / "from-runtime"
        self.read_fd: int | None = None
        self.write_fd: int | None = None

    @classmethod
    def create(cls, prefix: str, parent: Path | None = None) -> FifoPair:
        # mkdtemp makes it 0700; parent None: the system's temp dir
        directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        pair = cls(directory)
        try:
            os.mkfifo(pair.to_runtime, 0o600)
            os.mkfifo(pair.from_runtime, 0o600)
            # Non-blocking open of a FIFO's read end succeeds with no writer yet.
            pair.read_fd = os.open(pair.from_runtime, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            grow_pipe(pair.read_fd)
        except BaseException:
            pair.close()
            raise
        return pair

    async def wait_host_writer(self) -> None:
        """Wait until the host has opened ``from-runtime`` and written something.

        A FIFO read end with no writer ever connected reads as end-of-file, so the
        first read must wait for readability (epoll reports it only once a writer came).
        """
        assert self.read_fd is not None
        await trio.lowlevel.wait_readable(self.read_fd)

    async def open_write_end(self, *, poll_interval: float = 0.002) -> int:
        """Open ``to-runtime`` for writing once the host holds its read end."""
        while True:
            try:
                self.write_fd = os.open(self.to_runtime, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                grow_pipe(self.write_fd)
                return self.write_fd
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            # Start-up handshake only: the host is between its two opens.
            await trio.sleep(poll_interval)

    def close(self) -> None:
        for attr in ("read_fd", "write_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)


#: the pipe buffer asked for: a batch of a few hundred messages fits in one write and
#: one read (the default, 64 KiB, cuts big batches into several wake-ups)
PIPE_SIZE = 1 << 20


def grow_pipe(fd: int) -> None:
    """Ask for a larger pipe buffer; keep the default if the system refuses (a limit
    below :data:`PIPE_SIZE` in /proc/sys/fs/pipe-max-size for unprivileged users)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError):
        pass
