"""The team's data remote over SSH (dvc-ssh): push to Debian's sshd on a loopback port, then a fresh clone pulls
the same bytes, and an object missing on the remote is reported instead of silently skipped."""

from __future__ import annotations

import getpass
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege-separation directory
SHARDS = {"shard-000.bin": 0, "shard-001.bin": 1, "shard-002.bin": 2}  # file name -> seed of its bytes


@dataclass(frozen=True)
class SSHServer:
    port: int
    client_key: Path
    home: Path  # HOME for the DVC processes: no user's ~/.ssh or DVC config, a known_hosts for the throwaway host key


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def _wait_for_banner(server: subprocess.Popen, port: int, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"sshd exited with {server.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sshd did not answer on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture
def ssh_server(tmp_path):
    """Debian's sshd on a free loopback port, with a throwaway host key and one authorised throwaway client key
    for the current user. Skips only when sshd cannot be had (`.ci/run` installs openssh-server as root)."""
    if not SSHD.is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip(f"no {SSHD} or ssh-keygen here (apt-get install openssh-server)")
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as error:
            pytest.skip(f"sshd needs {PRIVSEP_DIR} and it cannot be created here ({error})")
    keys = tmp_path / "keys"
    keys.mkdir()
    host_public = _keygen(keys / "host_ed25519")
    (keys / "authorized_keys").write_text(_keygen(keys / "client_ed25519") + "\n")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    log = keys / "sshd.log"
    with log.open("w") as log_file:  # -e: sshd logs to stderr; a file never fills up and blocks it like a pipe
        server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log_file, stderr=log_file)
    try:
        _wait_for_banner(server, port, log)
        yield SSHServer(port=port, client_key=keys / "client_ed25519", home=home)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _environment(home: Path) -> dict[str, str]:
    environment = dict(os.environ, HOME=str(home), DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(home / "dvc-site"))
    environment.pop("DVC_ROOT", None)
    for who in ("AUTHOR", "COMMITTER"):
        environment |= {f"GIT_{who}_NAME": "fersynth test", f"GIT_{who}_EMAIL": "test@fersynth.invalid"}
    return environment


def _run(args: list[str], cwd: Path, env: dict[str, str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (result.returncode == 0) == expect_ok, f"{' '.join(args)} exited {result.returncode}:\n{output}"
    return result


def _dvc(cwd: Path, env: dict[str, str], *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd, env, expect_ok)


def _shard_bytes(seed: int) -> bytes:
    return random.Random(seed).randbytes(4096 + seed)


def _make_project(root: Path, env: dict[str, str]) -> dict[str, bytes]:
    """A git + DVC project tracking a manifest file and a directory of packed shards; returns path -> bytes."""
    root.mkdir()
    _run(["git", "init", "-q"], root, env)
    _dvc(root, env, "init", "-q")
    tracked = {"data/manifest.csv": b"shard,label\nshard-000.bin,happy\nshard-001.bin,sad\nshard-002.bin,angry\n"}
    tracked |= {f"data/shards/{name}": _shard_bytes(seed) for name, seed in SHARDS.items()}
    for relative, content in tracked.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    _dvc(root, env, "add", "-q", "data/manifest.csv", "data/shards")
    return tracked


def _configure_team_remote(root: Path, env: dict[str, str], server: SSHServer, remote: Path) -> None:
    """The shared URL goes to .dvc/config (committed); who connects, with which key, to .dvc/config.local."""
    _dvc(root, env, "remote", "add", "-d", "team", f"ssh://127.0.0.1:{server.port}{remote}")
    _dvc(root, env, "remote", "modify", "--local", "team", "user", getpass.getuser())
    _dvc(root, env, "remote", "modify", "--local", "team", "keyfile", str(server.client_key))


def _clone(origin: Path, clone: Path, env: dict[str, str]) -> None:
    """A teammate's checkout: git clone, plus their own .dvc/config.local (here the same user and key)."""
    _run(["git", "clone", "-q", str(origin), str(clone)], origin.parent, env)
    shutil.copy(origin / ".dvc" / "config.local", clone / ".dvc" / "config.local")


def _remote_object(remote: Path, content: bytes) -> Path:
    digest = hashlib.md5(content).hexdigest()
    return remote / "files" / "md5" / digest[:2] / digest[2:]


def test_push_then_a_fresh_clone_pulls_identical_data_and_a_missing_remote_object_is_reported(ssh_server, tmp_path):
    env = _environment(ssh_server.home)
    remote = tmp_path / "remote"
    origin = tmp_path / "origin"
    tracked = _make_project(origin, env)
    _configure_team_remote(origin, env, ssh_server, remote)
    assert "keyfile" not in (origin / ".dvc" / "config").read_text()  # the key path stays out of git
    _run(["git", "add", "-A"], origin, env)
    _run(["git", "commit", "-q", "-m", "data on the team remote"], origin, env)

    _dvc(origin, env, "push")
    for content in tracked.values():
        assert _remote_object(remote, content).read_bytes() == content
    assert len(list(remote.glob("files/md5/*/*.dir"))) == 1  # the shards directory's listing
    assert _dvc(origin, env, "status", "--cloud").stdout.strip() == "Cache and remote 'team' are in sync."

    teammate = tmp_path / "teammate"
    _clone(origin, teammate, env)
    assert not (teammate / "data" / "manifest.csv").exists()
    _dvc(teammate, env, "pull")
    for relative, content in tracked.items():
        assert (teammate / relative).read_bytes() == content, relative
    assert sorted(p.name for p in (teammate / "data" / "shards").iterdir()) == sorted(SHARDS)
    assert _dvc(teammate, env, "status").stdout.strip() == "Data and pipelines are up to date."
    assert _dvc(teammate, env, "status", "--cloud").stdout.strip() == "Cache and remote 'team' are in sync."
    assert "Not in remote" not in _dvc(teammate, env, "data", "status", "--not-in-remote").stdout

    # Lose one pushed file and one file inside the pushed directory. `status --cloud` sees the first; for the
    # second it trusts the directory's listing (.dir) on the remote, so only a pull can notice: it must fail.
    lost = ("data/manifest.csv", "data/shards/shard-001.bin")
    for relative in lost:
        _remote_object(remote, tracked[relative]).unlink()
    assert re.search(r"new:\s+data/manifest.csv", _dvc(origin, env, "status", "--cloud").stdout)
    newcomer = tmp_path / "newcomer"
    _clone(origin, newcomer, env)
    failed = _dvc(newcomer, env, "pull", expect_ok=False)
    assert "failed to pull data from the cloud" in failed.stderr
    for relative in lost:
        assert hashlib.md5(tracked[relative]).hexdigest() in failed.stderr, relative
        assert not (newcomer / relative).exists()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="sshfs connects with known_hosts=None and dvc-ssh 4.3 has no option to pass one, so the server's host key "
    "is never checked; an XPASS means upstream checks it now: document adding the server to ~/.ssh/known_hosts",
)
def test_a_server_whose_host_key_is_not_in_known_hosts_is_refused(ssh_server, tmp_path, monkeypatch):
    from asyncssh import HostKeyNotVerifiable
    from dvc_ssh import SSHFileSystem

    stranger = tmp_path / "stranger-home"
    (stranger / ".ssh").mkdir(parents=True)
    (stranger / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{ssh_server.port} {_keygen(tmp_path / 'other')}\n")
    monkeypatch.setenv("HOME", str(stranger))
    remote = SSHFileSystem(
        host="127.0.0.1", port=ssh_server.port, user=getpass.getuser(), keyfile=str(ssh_server.client_key)
    )
    try:
        remote.exists(str(tmp_path))
    except HostKeyNotVerifiable:
        return
    raise AssertionError("connected to a server whose host key does not match ~/.ssh/known_hosts")
