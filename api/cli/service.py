"""``fifoflow runner install-service`` / ``uninstall-service``: start a runner at boot.

Linux: a systemd unit (``--system`` as root: ``/etc/systemd/system``; otherwise a user
unit in ``$XDG_CONFIG_HOME/systemd/user``), checked with ``systemd-analyze verify`` when
it is there, then ``systemctl daemon-reload`` and ``enable --now``. macOS: a launchd
agent in ``~/Library/LaunchAgents``, loaded with ``launchctl load -w``. A one-time
registration token goes to ``<state dir>/registration.env`` (mode 0600), not into the
unit, which others may read.

If any step fails, everything this command wrote is removed again (and a unit it
enabled is disabled): no half-installed service is left behind. ``--print`` shows the
unit without installing anything.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fifoflow.api.cli.common import EXIT_FAILED, EXIT_OK, err, out
from fifoflow.api.common.places import default_state_dir
from fifoflow.runner.store import atomic_write

if TYPE_CHECKING:
    import argparse

__all__ = ["add_service_parsers"]

UNIT = "fifoflow-runner.service"
PLIST = "dev.fifoflow.runner.plist"


class InstallError(Exception):
    pass


def _serve_argv(args: argparse.Namespace, state_dir: Path) -> list[str]:
    argv = [sys.executable, "-m", "fifoflow.api", "runner", "serve", "--state-dir", str(state_dir)]
    if args.dispatcher:
        argv += ["--dispatcher", args.dispatcher]
    if args.host:
        argv += ["--host", args.host]
    if args.port:
        argv += ["--port", str(args.port)]
    return argv


def unit_text(args: argparse.Namespace, state_dir: Path) -> str:
    command = " ".join(shlex.quote(part) for part in _serve_argv(args, state_dir))
    return f"""\
[Unit]
Description=fifoflow runner ({state_dir})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={command}
EnvironmentFile=-{state_dir}/registration.env
Restart=on-failure
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy={"multi-user.target" if args.system else "default.target"}
"""


def plist_text(args: argparse.Namespace, state_dir: Path) -> str:
    items = "".join(f"    <string>{part}</string>\n" for part in _serve_argv(args, state_dir))
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>dev.fifoflow.runner</string>
  <key>ProgramArguments</key>
  <array>
{items}  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><true/>
  <key>StandardOutPath</key><string>{state_dir}/runner.log</string>
  <key>StandardErrorPath</key><string>{state_dir}/runner.log</string>
</dict>
</plist>
"""


def _unit_path(args: argparse.Namespace) -> Path:
    if platform.system() == "Darwin":
        return Path.home() / "Library" / "LaunchAgents" / PLIST
    if args.system:
        return Path("/etc/systemd/system") / UNIT
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT


def _call(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise InstallError(
            f"{' '.join(argv)} failed: {why[-1] if why else f'exit {done.returncode}'}"
        )


def cmd_install(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve() if args.state_dir else default_state_dir()
    darwin = platform.system() == "Darwin"
    text = plist_text(args, state_dir) if darwin else unit_text(args, state_dir)
    if args.print:
        sys.stdout.write(text)
        return EXIT_OK
    path = _unit_path(args)
    written: list[Path] = []
    enabled = False
    systemctl = ["systemctl"] if args.system else ["systemctl", "--user"]
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = args.registration_token or os.environ.get("FIFOFLOW_REGISTRATION_TOKEN")
        if token:
            env_file = state_dir / "registration.env"
            atomic_write(env_file, f"FIFOFLOW_REGISTRATION_TOKEN={token}\n".encode(), mode=0o600)
            written.append(env_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text.encode(), mode=0o644)
        written.append(path)
        if darwin:
            _call(["launchctl", "load", "-w", str(path)])
        else:
            if shutil.which("systemd-analyze"):
                _call(
                    [
                        "systemd-analyze",
                        "verify",
                        *(["--user"] if not args.system else []),
                        str(path),
                    ]
                )
            _call([*systemctl, "daemon-reload"])
            _call([*systemctl, "enable", "--now", UNIT])
            enabled = True
    except (InstallError, OSError) as exc:
        if enabled:
            subprocess.run([*systemctl, "disable", "--now", UNIT], capture_output=True, check=False)
        for item in reversed(written):
            item.unlink(missing_ok=True)
        err(f"fifoflow: could not install the runner service: {exc}")
        if written:
            err("  removed what was written: " + ", ".join(str(p) for p in written))
        return EXIT_FAILED
    out(f"installed and started: {path}")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    path = _unit_path(args)
    if platform.system() == "Darwin":
        subprocess.run(["launchctl", "unload", "-w", str(path)], capture_output=True, check=False)
    else:
        systemctl = ["systemctl"] if args.system else ["systemctl", "--user"]
        subprocess.run([*systemctl, "disable", "--now", UNIT], capture_output=True, check=False)
    existed = path.exists()
    path.unlink(missing_ok=True)
    if not platform.system() == "Darwin":
        subprocess.run(
            ["systemctl", *([] if args.system else ["--user"]), "daemon-reload"],
            capture_output=True,
            check=False,
        )
    out(f"removed {path}" if existed else f"nothing to remove at {path}")
    return EXIT_OK


def add_service_parsers(runner_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = runner_sub.add_parser(
        "install-service", help="start a runner at boot (systemd or launchd)"
    )
    install.add_argument("--state-dir", help="the runner's state dir (default: the default one)")
    install.add_argument("--dispatcher", metavar="URL")
    install.add_argument(
        "--registration-token", metavar="TOKEN", help="kept in <state dir>/registration.env (0600)"
    )
    install.add_argument("--host")
    install.add_argument("--port", type=int)
    install.add_argument(
        "--system", action="store_true", help="a system unit (root) instead of a user unit"
    )
    install.add_argument("--print", action="store_true", help="print the unit, install nothing")
    install.set_defaults(func=cmd_install)
    uninstall = runner_sub.add_parser(
        "uninstall-service", help="stop and remove the runner service"
    )
    uninstall.add_argument("--system", action="store_true")
    uninstall.set_defaults(func=cmd_uninstall)
