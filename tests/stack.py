"""The team's servers, real and on 127.0.0.1 only: SeaweedFS (S3), PostgreSQL, an MLflow server on
both, and OpenSSH's sshd. Started by `.ci/services` for CI or by tests/test_team.py itself; each
one's argv, PID and endpoint are kept in a JSON state file, so a test can stop one and start it again.

    python -m tests.stack start DIR   # DIR/state.json, DIR/env (the endpoints as shell exports)
    python -m tests.stack stop DIR    # every PID in DIR/state.json
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import free_port

VENV_BIN = Path(sys.prefix) / "bin"
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name),
             default=Path("/usr/lib/postgresql/bin"))  # Debian's newest installed PostgreSQL
SSHD = Path("/usr/sbin/sshd")
BUCKET = "charrnn"
S3_KEY, S3_SECRET = "charrnn-team", "charrnn-team-secret"
PG_PASSWORD = "charrnn-team-pg"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def missing() -> list[str]:
    """What this machine lacks to run the stack (empty: everything is installed)."""
    needs = {"weed (make install-team)": VENV_BIN / "weed", "postgresql (apt)": PG_BIN / "postgres",
             "openssh-server (apt)": SSHD, "ssh-keygen (apt)": Path("/usr/bin/ssh-keygen")}
    gone = [name for name, path in needs.items() if not path.exists()]
    for module in ("dvc_s3", "dvc_ssh", "psycopg", "boto3"):
        try:
            __import__(module)
        except ImportError:
            gone.append(f"{module} (make install-team)")
    return gone


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on 127.0.0.1:{port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} is not listening on 127.0.0.1:{port} after {timeout:.0f} s")


class Stack:
    """The servers under `root` (a directory of their data, logs and state.json)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.state_file = self.root / "state.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # --- endpoints the tests and README recipes use
    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.state['s3']['port']}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.state['mlflow']['port']}"

    @property
    def ssh(self) -> dict:
        return self.state["sshd"]["info"]

    def client_env(self) -> dict:
        """What a machine of the team sets to reach the object store (and nothing else)."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": self.s3_url, **QUIET}

    def env_lines(self) -> str:
        values = {"CHARRNN_TEAM_STACK": str(self.root), "CHARRNN_TEAM_S3": self.s3_url,
                  "CHARRNN_TEAM_TRACKING": self.tracking_uri}
        return "".join(f"export {k}={v}\n" for k, v in values.items())

    # --- life cycle
    def start_all(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._prepare_s3()
        self.start("s3")
        self._prepare_postgres()
        self.start("postgres")
        self._create_database()
        self._prepare_mlflow()
        self.start("mlflow")
        self._prepare_sshd()
        self.start("sshd")
        (self.root / "env").write_text(self.env_lines())

    def start(self, name: str) -> None:
        spec = self.state[name]
        log = open(self.root / f"{name}.log", "ab")
        user = spec.get("user")
        proc = subprocess.Popen(spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **QUIET, **spec.get("env", {})}, user=user,
                                group=user, start_new_session=True, cwd=self.root)
        spec["pid"] = proc.pid
        self._save()
        wait_port(spec["port"], proc, name)

    def stop(self, name: str) -> None:
        pid = self.state.get(name, {}).pop("pid", None)
        self._save()
        if pid is None:
            return
        try:  # its own session: the server and the workers it forked
            os.killpg(pid, self.state[name].get("signal", signal.SIGTERM))
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if _reap(pid):
                return
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
        _reap(pid)

    def stop_all(self) -> None:
        for name in ("sshd", "mlflow", "postgres", "s3"):
            self.stop(name)

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=1))

    # --- one method a server: its data, its argv
    def _prepare_s3(self) -> None:
        (self.root / "s3").mkdir(exist_ok=True)
        config = {"identities": [{"name": "team", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.root / "s3.json").write_text(json.dumps(config))
        # every gRPC port too: the default (HTTP port + 10000) overflows for a high free port
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = [f"-{name}.port.grpc={free_port()}" for name in ports]
        argv = [str(VENV_BIN / "weed"), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", f"-dir={self.root / 's3'}", "-filer", "-s3",
                f"-s3.config={self.root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
                f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}", *grpc, "-master.volumeSizeLimitMB=64",
                "-volume.max=0", "-volume.preStopSeconds=0",
                f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}"]
        self.state["s3"] = {"argv": argv, "port": ports["s3"]}

    def _prepare_postgres(self) -> None:
        data, user = self.root / "pg", ("postgres" if os.geteuid() == 0 else None)
        data.mkdir(exist_ok=True)
        (self.root / "pg.pw").write_text(PG_PASSWORD)
        if user:
            shutil.chown(data, user)
            shutil.chown(self.root / "pg.pw", user)
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={self.root / 'pg.pw'}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"],
                       check=True, capture_output=True, user=user, group=user)
        port = free_port()
        argv = [str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                "-k", str(data), "-c", "shared_buffers=16MB", "-c", "max_connections=20"]
        # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave)
        self.state["postgres"] = {"argv": argv, "port": port, "user": user, "signal": int(signal.SIGINT)}
        os.chmod(self.root, 0o755)  # postgres must reach its data directory

    def _create_database(self) -> None:
        port = self.state["postgres"]["port"]
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        for _ in range(50):  # the port opens a moment before connections are accepted
            if subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True, env=env)

    @property
    def backend_uri(self) -> str:
        return f"postgresql://mlflow:{PG_PASSWORD}@127.0.0.1:{self.state['postgres']['port']}/mlflow"

    def _prepare_mlflow(self) -> None:
        self._make_bucket()
        port = free_port()
        argv = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri,
                "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1"]
        tmp = self.root / "mlflow-tmp"  # MLflow leaves a lock file per database URL in its TMPDIR
        tmp.mkdir(exist_ok=True)
        env = {**self.client_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "TMPDIR": str(tmp)}
        self.state["mlflow"] = {"argv": argv, "port": port, "env": env}

    def _make_bucket(self) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
        for _ in range(60):  # the gateway answers before the filer behind it is ready
            try:
                s3.create_bucket(Bucket=BUCKET)
                return
            except s3.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:  # noqa: BLE001 - not ready yet
                time.sleep(0.5)
        s3.create_bucket(Bucket=BUCKET)

    def _prepare_sshd(self) -> None:
        d = self.root / "ssh"
        d.mkdir(exist_ok=True)
        for name in ("host_key", "client_key"):
            if not (d / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o600)
        (d / "remote").mkdir(exist_ok=True)
        port = free_port()
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        config = d / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        info = {"port": port, "user": user, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
                "path": str(d / "remote")}
        self.state["sshd"] = {"argv": [str(SSHD), "-D", "-e", "-f", str(config)], "port": port, "info": info}


def _reap(pid: int) -> bool:
    """True once `pid`, a child of this process, has exited (False for another's child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return False


def main(argv: list[str]) -> None:
    command, root = argv
    stack = Stack(Path(root))
    if command == "start":
        try:
            stack.start_all()
        except BaseException:
            stack.stop_all()
            raise
        print(stack.env_lines(), end="")
    else:
        stack.stop_all()


if __name__ == "__main__":
    main(sys.argv[1:])
