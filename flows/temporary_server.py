"""Prefect's temporary API server, started in a session of its own.

Without PREFECT_API_URL a flow run talks to a temporary server that Prefect starts as a
child process. In the terminal's foreground process group that child also receives the
Ctrl-C meant for the build and exits at once, while the build still has task states to
report: the client then retried for minutes. In its own session the server outlives the
Ctrl-C; Prefect stops it when the command exits, as before.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any


def start_temporary_server_in_own_session() -> None:
    """Make the temporary server that Prefect starts on first use (if it needs one) start in
    its own session. Prefect looks its server up by port (None: any free port), so an
    instance registered here first is the one it starts."""
    from prefect.server.api import server

    class ServerInOwnSession(server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect builds the command and its environment; only the session differs.
            spawn = server.subprocess.Popen
            server.subprocess.Popen = functools.partial(spawn, start_new_session=True)
            try:
                return super()._run_uvicorn_command()
            finally:
                server.subprocess.Popen = spawn

    if None not in server.SubprocessASGIServer._instances:
        ServerInOwnSession()
