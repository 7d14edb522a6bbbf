"""A throw-away PostgreSQL server for tests: Debian's binaries, loopback, a temp dir.

``TempPostgres`` runs ``initdb`` and ``pg_ctl`` as the ``postgres`` system user (the
server refuses to run as root), listens on 127.0.0.1 only, on a free port, with no
Unix socket outside its data directory; ``stop()`` removes everything it made.
``restart()`` is the "PostgreSQL restarted in the middle" of the deployment tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SYSTEM_USER = "postgres"


def postgres_missing() -> str | None:
    """Why no throw-away server can run here, or None if one can."""
    if not BIN_DIRS or not (BIN_DIRS[0] / "pg_ctl").exists():
        return "Debian's postgresql package is not installed (apt-get install postgresql)"
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return "no 'postgres' system user (apt-get install postgresql creates it)"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != SYSTEM_USER:
        return "starting PostgreSQL needs root (to run it as 'postgres')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempPostgres:
    def __init__(self, database: str = "dsb") -> None:
        self.bin = BIN_DIRS[0]
        self.port = free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="dsb-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://{SYSTEM_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True,
                              timeout=120)

    def start(self) -> TempPostgres:
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SYSTEM_USER,
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        self._pg_ctl("start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", SYSTEM_USER, self.database)
        return self

    def _pg_ctl(self, action: str) -> None:
        # fsync off: a test server trades durability for speed; the socket stays in the
        # data directory so nothing is left in /var/run.
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
                   f"-c unix_socket_directories={self.root} -c max_connections=200")
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                "-l", str(self.root / "server.log")]
        if action in ("start", "restart"):
            argv += ["-o", options]
        if action in ("stop", "restart"):
            argv += ["-m", "fast"]
        self._run(*argv, action)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (fast: open connections are cut), wait ``down_s``, start again."""
        self._pg_ctl("stop")
        time.sleep(down_s)
        self._pg_ctl("start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m",
                      "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """An empty ``public`` schema: each test starts from no tables."""
        reset_schema(self.url)


def reset_schema(url: str) -> None:
    """Drop every table of the server at ``url`` (its ``public`` schema, recreated)."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


def main(argv: list[str]) -> int:
    """``python tests/pg_support.py CMD...``: run CMD with a throw-away PostgreSQL whose
    URL is in ``DSB_TEST_POSTGRES_URL`` (the audit tests then also run on PostgreSQL)."""
    if reason := postgres_missing():
        print(f"pg_support: {reason}; running without PostgreSQL", flush=True)
        return subprocess.call(argv)
    server = TempPostgres().start()
    try:
        return subprocess.call(argv, env={**os.environ, "DSB_TEST_POSTGRES_URL": server.url})
    finally:
        server.stop()


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
