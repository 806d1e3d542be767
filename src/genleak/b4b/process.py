"""Run the B4B server (``python -m genleak.b4b.server``, what ``genleak b4b serve`` runs) as a child
process on loopback (simulation, benchmarks, tests).

A real process, not a thread, so it can be killed with SIGKILL mid-request: that is how the
durability claim ("every acknowledged request survives a crash") is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from genleak._extras import needs_extra
from genleak.errors import GenleakError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The B4B server in a subprocess; ``start()`` returns once ``/healthz`` answers. ``settings`` are
    further ``ServerSettings`` fields (``torch_threads``, ``sqlite_synchronous``, ``max_batch``, ...)."""

    def __init__(self, model: str | Path, db: str, *, config: str | Path | None = None, port: int | None = None,
                 host: str = "127.0.0.1", workers: int = 1, log_file: str | Path | None = None, **settings: Any) -> None:
        from genleak.b4b.server import ServerSettings  # needs the [serve] extra (fastapi)

        self.settings = ServerSettings(model=str(model), db=db, config=str(config) if config else None, **settings)
        self.host, self.workers = host, workers
        self.port = port or free_port(host)
        # Output goes to a file, never to an unread pipe that could fill up and stall the server.
        self._own_log = log_file is None
        if log_file is None:
            fd, name = tempfile.mkstemp(prefix="genleak-b4b-server-", suffix=".log")
            os.close(fd)
            log_file = name
        self.log_file = Path(log_file)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        with needs_extra("serve"):
            import httpx

        from genleak.b4b.server import SETTINGS_ENV

        cmd = [sys.executable, "-m", "genleak.b4b.server", "--host", self.host, "--port", str(self.port),
               "--workers", str(self.workers), "--log-level", "warning"]
        env = {**os.environ, SETTINGS_ENV: json.dumps(asdict(self.settings))}
        self._log = open(self.log_file, "ab")  # closed in stop() / kill()
        # Own process group: kill() must take uvicorn's worker processes (--workers N) down too.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                tail = self.log_text()[-2000:]
                code = self.proc.returncode
                self.cleanup()
                raise GenleakError(f"encoder server exited with code {code}: {tail}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_text()[-2000:]
        self.kill()
        self.cleanup()
        raise GenleakError(f"encoder server did not answer on {self.url} within {timeout:.0f} s: {tail}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what survives is what was committed."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group: the server and any workers
            self.proc.wait(timeout=30)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def cleanup(self) -> None:
        """Stop the server and delete the log file if this object created it."""
        self.stop()
        if self._own_log:
            self.log_file.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
