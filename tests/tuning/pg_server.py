"""A throwaway PostgreSQL server for tests: Debian's binaries, a temp data dir, loopback only.

``start()`` returns ``(url, stop)`` or raises ``Unavailable`` with the reason. As root it
runs the server as the ``postgres`` user (initdb and postgres refuse root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class Unavailable(RuntimeError):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not candidates:
        raise Unavailable(f"{name} not found (apt-get install postgresql)")
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(timeout: float = 90.0) -> tuple[str, callable]:
    try:
        import psycopg2  # noqa: F401  (the driver SQLAlchemy uses for postgresql://)
    except ImportError as exc:
        raise Unavailable(f"psycopg2 missing ({exc}); pip install 'recsys[tune]'") from exc
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise Unavailable("running as root and there is no postgres user to run the server as") from exc
        os.chown(root, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser")
        prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]

    def run(args: list[str]) -> subprocess.CompletedProcess:
        cmd = prefix + ([" ".join(args)] if prefix[:1] == ["su"] else args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    data = root / "data"

    def stop() -> None:
        try:
            run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(root, ignore_errors=True)

    done = run([initdb, "-D", str(data), "-U", "recsys", "--auth=trust", "-E", "UTF8", "--no-instructions"])
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
    for _ in range(3):  # another process may take the port between choosing and binding it
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
        done = run([pg_ctl, "-D", str(data), "-o", f"'{options}'" if prefix[:1] == ["su"] else options,
                    "-l", str(root / "server.log"), "-w", "-t", str(int(timeout)), "start"])
        if done.returncode == 0:
            url = f"postgresql+psycopg2://recsys@127.0.0.1:{port}/postgres"
            deadline = time.time() + 30
            while True:
                try:
                    import psycopg2

                    psycopg2.connect(host="127.0.0.1", port=port, user="recsys", dbname="postgres").close()
                    return url, stop
                except Exception as exc:
                    if time.time() > deadline:
                        stop()
                        raise Unavailable(f"server started but refuses connections: {exc}") from exc
                    time.sleep(0.5)
    log = (root / "server.log").read_text(errors="replace")[-500:] if (root / "server.log").exists() else ""
    stop()
    raise Unavailable(f"pg_ctl start failed: {(done.stderr or done.stdout).strip()[-300:]} {log}")
