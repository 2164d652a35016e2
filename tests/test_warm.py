"""`fersynth warm -- COMMAND`: fersynth commands started by COMMAND run in forks of one server that has
imported the heavy libraries; they must behave exactly like new processes (output bytes, exit codes,
streams, working directory, environment, umask), fall back to a cold start when they cannot be served
alike, and stop when their caller is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
PROBE_ENTRY = "tests.warm_probe:main"  # workers report on themselves instead of running fersynth's commands
TINY_DEMO = "demo:\n  seed: 7\n  fer2013_rows: 40\n  nuisances:\n    corrupt: 1\n    malformed: 1\n"


def _environment(**extra) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "FERSYNTH_WARM"}
    environment["PATH"] = f"{BIN}{os.pathsep}{environment['PATH']}"
    return environment | extra


def _warm(script: str, cwd: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["fersynth", "warm", "--", "sh", "-c", script],
        cwd=cwd,
        env=_environment(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _interpreter() -> str:
    """The Python the `fersynth` console script runs: a server started with another path serves no caller."""
    return (BIN / "fersynth").read_text().splitlines()[0].removeprefix("#!").strip()


def _warm_probe(script: str, cwd: Path, preexec_fn=None, **extra) -> subprocess.Popen:
    """`fersynth warm -- sh -c SCRIPT` whose workers run tests/warm_probe.py (``fersynth limits OUT``, ...);
    ``$PROBE`` in SCRIPT runs the same probe cold."""
    environment = _environment(**extra)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment["PROBE"] = f"{_interpreter()} -m tests.warm_probe"
    start = f"import sys; from fersynth.ops.warm import run_warm; sys.exit(run_warm(sys.argv[1:], {PROBE_ENTRY!r}))"
    return subprocess.Popen(
        [_interpreter(), "-c", start, "sh", "-c", script],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def _wait_for(path: Path, runner: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline and runner.poll() is None, runner.communicate()
        time.sleep(0.1)


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, Z, ...); None once it is gone (reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _server_and_workers(runner_pid: int, socket_path: str) -> tuple[int, list[int]]:
    """The warm server `fersynth warm` (``runner_pid``) started, and its workers: forks of it, with its command line."""
    parents = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if socket_path.encode() in cmdline.read_bytes():
                stat = (cmdline.parent / "stat").read_text()
                parents[int(cmdline.parent.name)] = int(stat.rpartition(")")[2].split()[1])
    (server,) = [pid for pid, parent in parents.items() if parent == runner_pid]
    return server, [pid for pid, parent in parents.items() if parent == server]


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_warm_commands_match_cold_ones_in_output_exit_code_cwd_env_and_umask(tmp_path):
    for name in ("cold", "warm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p.yaml").write_text(TINY_DEMO)
    script = (
        "umask 077; fersynth demo --only fer2013 --out out --params p.yaml >log.txt 2>/dev/null; echo demo=$?; "
        "fersynth --version; OMP_NUM_THREADS=3 fersynth --version; OPENBLAS_VERBOSE=0 fersynth --version; "
        "fersynth nosuch 2>err.txt; echo nosuch=$?; "
        'fersynth merge --source "x=$MISSING_DIR" --out m 2>>err.txt; echo merge=$?'
    )
    cold = subprocess.run(
        ["sh", "-c", script],
        cwd=tmp_path / "cold",
        env=_environment(MISSING_DIR="/nonexistent/x"),
        capture_output=True,
        text=True,
    )
    warm = _warm(script, tmp_path / "warm", MISSING_DIR="/nonexistent/x")
    assert warm.returncode == 0, warm.stderr
    assert "demo=0" in cold.stdout and "nosuch=2" in cold.stdout and "merge=2" in cold.stdout
    assert warm.stdout == cold.stdout  # exit codes, and --version's stdout, in the caller's order
    # served, not silently cold: libraries read OPENBLAS_* at import, so that caller started cold; an exported
    # OMP_NUM_THREADS no longer does, since every fersynth process pins it (fersynth.runtime) as the server did
    assert "fersynth warm: 5 command(s) ran warm; 1 cold: OPENBLAS_VERBOSE differ\n" in warm.stderr
    cold_files, warm_files = _files(tmp_path / "cold"), _files(tmp_path / "warm")
    for files in (cold_files, warm_files):  # the stage's log: same lines, different clock
        log = files.pop("log.txt")[0].decode()
        assert "demo fer2013:" in log and "ground-truth rows" in log
    assert warm_files == cold_files  # same bytes, same modes (umask 077 reached the worker), cwd-relative
    assert {mode for name, (_data, mode) in warm_files.items() if name.startswith("out/")} == {0o600}
    assert "/nonexistent/x" in warm_files["err.txt"][0].decode()  # the caller's environment, the caller's stderr


def test_with_cold_while_loading_an_early_command_starts_cold_and_later_ones_are_served(tmp_path):
    script = (
        "fersynth --version; "  # the server is still importing (seconds): this one runs cold beside it
        'while [ ! -e "$(dirname "$FERSYNTH_WARM")/ready" ]; do sleep 0.1; done; fersynth --version'
    )
    warm = subprocess.run(
        ["fersynth", "warm", "--cold-while-loading", "--", "sh", "-c", script],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.count("fersynth, version") == 2
    assert "fersynth warm: 1 command(s) ran warm; 1 cold: server still loading\n" in warm.stderr


def test_without_a_reachable_server_fersynth_starts_cold(tmp_path):
    gone = subprocess.run(
        ["fersynth", "--version"],
        env=_environment(FERSYNTH_WARM=str(tmp_path / "no-such-socket")),
        capture_output=True,
        text=True,
    )
    assert gone.returncode == 0 and "fersynth, version" in gone.stdout


@pytest.mark.slow  # ~8 s each (a server start and a ~30 s demo stopped midway)
def test_stopping_the_caller_stops_its_warm_worker(tmp_path):
    (tmp_path / "p.yaml").write_text(TINY_DEMO.replace("fer2013_rows: 40", "fer2013_rows: 50000"))
    script = "fersynth demo --only fer2013 --out out --params p.yaml & echo $! > pid; wait $!; echo $? > rc"
    runner = subprocess.Popen(
        ["fersynth", "warm", "--", "sh", "-c", script],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "out").exists():  # the worker has started writing
        assert time.monotonic() < deadline and runner.poll() is None, runner.communicate()
        time.sleep(0.2)
    started = time.monotonic()
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGTERM)
    _out, err = runner.communicate(timeout=60)
    assert (tmp_path / "rc").read_text().strip() == str(128 + signal.SIGTERM)
    assert time.monotonic() - started < 10  # the demo itself needs ~30 s: the worker was stopped, not awaited
    assert not (tmp_path / "out" / "fer2013" / "fer2013.csv").exists()  # killed before its atomic write
    assert "1 command(s) ran warm" in err


@pytest.mark.slow  # ~8 s each (a server start and a ~30 s demo stopped midway)
def test_a_killed_caller_takes_its_worker_with_it(tmp_path):
    (tmp_path / "p.yaml").write_text(TINY_DEMO.replace("fer2013_rows: 40", "fer2013_rows: 50000"))
    script = (
        "fersynth demo --only fer2013 --out out --params p.yaml & echo $! > pid; "
        "while [ ! -e out ]; do sleep 0.1; done; kill -9 $!; wait $!; echo $? > rc"
    )
    started = time.monotonic()
    warm = _warm(script, tmp_path)
    assert (tmp_path / "rc").read_text().strip() == "137"
    # the server saw the caller's connection close and killed the worker at once (not at its 10 s deadline)
    assert "; 1 killed: its caller vanished\n" in warm.stderr
    assert time.monotonic() - started < 30  # the demo alone would take ~30 s more
    assert not (tmp_path / "out" / "fer2013" / "fer2013.csv").exists()


@pytest.mark.slow  # ~8 s each (a server start and a ~30 s demo stopped midway)
def test_terminating_fersynth_warm_stops_the_command_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "p.yaml").write_text(TINY_DEMO.replace("fer2013_rows: 40", "fer2013_rows: 50000"))
    script = 'echo "$FERSYNTH_WARM" > socket; exec fersynth demo --only fer2013 --out out --params p.yaml'
    runner = subprocess.Popen(
        ["fersynth", "warm", "--", "sh", "-c", script], cwd=tmp_path, env=_environment(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "out").exists():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)  # what make does to its recipe on Ctrl-C / kill
    _out, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, err
    assert b"1 command(s) ran warm" in err  # the server stopped cleanly and reported
    socket_path = Path((tmp_path / "socket").read_text().strip())
    assert not socket_path.parent.exists()  # its private directory is gone
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(socket_path).encode() in cmdline.read_bytes():
                leftovers.append(cmdline.parent.name)
    assert leftovers == []  # no server, no worker (workers carry the server's command line)


@pytest.mark.parametrize("command", [["no-such-program-xyz"], ["sh", "-c", "exit 3"]])
def test_warm_returns_the_commands_exit_code(tmp_path, command):
    result = subprocess.run(
        ["fersynth", "warm", "--", *command], cwd=tmp_path, env=_environment(), capture_output=True, text=True
    )
    assert result.returncode == (127 if command[0].startswith("no-such") else 3)
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # ~10 s (a server start and a ~30 s demo stopped midway)
def test_a_killed_server_takes_its_workers_with_it(tmp_path):
    (tmp_path / "p.yaml").write_text(TINY_DEMO.replace("fer2013_rows: 40", "fer2013_rows: 50000"))
    script = (
        'echo "$FERSYNTH_WARM" > socket; fersynth demo --only fer2013 --out out --params p.yaml & wait $!; echo $? > rc'
    )
    runner = subprocess.Popen(
        ["fersynth", "warm", "--", "sh", "-c", script],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "out", runner)  # the worker has started writing
    server, (worker,) = _server_and_workers(runner.pid, (tmp_path / "socket").read_text().strip())
    try:
        os.kill(server, signal.SIGKILL)  # the OOM killer's way
        _out, err = runner.communicate(timeout=60)
        assert (tmp_path / "rc").read_text().strip() == "1"  # DVC sees the stage fail...
        assert _state(worker) in (None, "Z")  # ...once its worker is dead: nothing publishes after that
        assert "the warm server ended while worker" in err
        assert not (tmp_path / "out" / "fer2013" / "fer2013.csv").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)  # what an unfixed server would leave running for ~30 s


@pytest.mark.slow  # ~15 s (a server start, an MLflow database created, a run stopped)
def test_terminating_fersynth_warm_ends_an_orphaned_workers_run_killed_and_reaps_it(tmp_path):
    # DVC, terminated, exits without signalling its stage: `sh` does the same with a background job
    runner = _warm_probe(
        "fersynth mlflow-run run.json & wait", tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    _wait_for(tmp_path / "run.json", runner)
    held = json.loads((tmp_path / "run.json").read_text())
    try:
        runner.send_signal(signal.SIGTERM)
        _out, err = runner.communicate(timeout=60)
        assert runner.returncode == 128 + signal.SIGTERM, err
        with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:
            (status,) = db.execute("select status from runs where run_uuid = ?", (held["run_id"],)).fetchone()
        assert status == "KILLED"  # the worker got SIGTERM, as a cold stage's process group would
        assert _state(held["pid"]) is None  # reaped by the server: no process, no zombie
        assert "; 1 stopped: still running when the command ended\n" in err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(held["pid"], signal.SIGKILL)


def test_a_warm_worker_runs_with_its_callers_limits_and_nice(tmp_path):
    script = (
        # a sandboxed caller: fewer files, a CPU-time limit, a lower priority
        "(ulimit -n 200; ulimit -t 600; exec nice -n 7 sh -c "
        "'$PROBE limits cold-low.json; fersynth limits warm-low.json'); "
        # a caller that raised its soft limit above the server's (still under the hard one)
        "(ulimit -S -n 1000; $PROBE limits cold-high.json; fersynth limits warm-high.json)"
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    runner = _warm_probe(script, tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard)))
    _out, err = runner.communicate(timeout=300)
    assert runner.returncode == 0, err
    assert "fersynth warm: 2 command(s) ran warm\n" in err
    low, high = (
        {k: json.loads((tmp_path / f"{k}-{n}.json").read_text()) for k in ("cold", "warm")} for n in ("low", "high")
    )
    assert low["cold"]["rlimits"]["RLIMIT_NOFILE"] == [200, 200] and low["cold"]["rlimits"]["RLIMIT_CPU"] == [600, 600]
    assert high["cold"]["rlimits"]["RLIMIT_NOFILE"] == [1000, hard] and low["cold"]["nice"] > high["cold"]["nice"]
    assert low["warm"] == low["cold"]
    assert high["warm"] == high["cold"]


def test_a_caller_whose_limit_the_server_cannot_give_starts_cold(tmp_path):
    script = 'echo "$FERSYNTH_WARM" > socket; while [ ! -e go ]; do sleep 0.1; done; fersynth --version'
    runner = subprocess.Popen(
        ["fersynth", "warm", "--", "sh", "-c", script],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "socket", runner)
    server, _workers = _server_and_workers(runner.pid, (tmp_path / "socket").read_text().strip())
    resource.prlimit(server, resource.RLIMIT_NOFILE, (64, 64))  # raising it back needs a privilege
    (tmp_path / "go").touch()
    out, err = runner.communicate(timeout=300)
    assert runner.returncode == 0 and "fersynth, version" in out
    assert "fersynth warm: 0 command(s) ran warm; 1 cold: RLIMIT_NOFILE above the server's\n" in err


def test_callers_that_set_a_preloaded_librarys_settings_start_cold(tmp_path):
    script = (
        "SKLEARN_ASSUME_FINITE=1 fersynth --version; JOBLIB_START_METHOD=forkserver fersynth --version; "
        "PANDAS_COPY_ON_WRITE=warn fersynth --version; fersynth --version"
    )
    warm = _warm(script, tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.count("fersynth, version") == 4
    assert (
        "fersynth warm: 1 command(s) ran warm; 1 cold: JOBLIB_START_METHOD differ; "
        "1 cold: PANDAS_COPY_ON_WRITE differ; 1 cold: SKLEARN_ASSUME_FINITE differ\n"
    ) in warm.stderr


def test_a_caller_in_another_network_namespace_starts_cold(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rn (an unprivileged user and network namespace) is not available here")
    warm = _warm("unshare -rn fersynth --version; fersynth --version", tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.count("fersynth, version") == 2
    assert "fersynth warm: 1 command(s) ran warm; 1 cold: net, user namespaces differ\n" in warm.stderr


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_the_folders_of_killed_runs_are_swept(tmp_path):
    from fersynth.ops.warm import stale_workdirs

    dead, alive = _dead_pid(), os.getpid()
    zombie = subprocess.Popen(["true"])  # exited, not reaped: a killed run's server until init reaps it
    while _state(zombie.pid) != "Z":
        time.sleep(0.01)

    def folder(name: str, files: dict[str, str]) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file, text in files.items():
            (path / file).write_text(text)
        return path

    killed = folder(f"fersynth-warm-{dead}-ab12_xyz", {"socket": "", "stats.json": "{}", "pids": f"{dead} {dead}\n"})
    killed_early = folder(f"fersynth-warm-{dead}-c3d4e5f6", {})  # SIGKILLed before it wrote its pids
    server_exited = folder(f"fersynth-warm-{dead}-zombie01", {"pids": f"{dead} {zombie.pid}\n", "ready": ""})
    folder(f"fersynth-warm-{alive}-running1", {"pids": f"{alive} {dead}\n"})  # its caller still runs
    folder(f"fersynth-warm-{dead}-stopping", {"pids": f"{dead} {alive}\n", "ready": ""})  # its server still stops
    folder(f"fersynth-warm-{dead}-notours01", {"pids": f"{dead} {dead}\n", "thesis.tex": "mine"})
    folder("fersynth-warm-x-named_odd", {})
    (tmp_path / f"fersynth-warm-{dead}-alink001").symlink_to(killed_early)
    fifo = folder(f"fersynth-warm-{dead}-fifo0001", {})
    os.mkfifo(fifo / "pids")  # would block an open without O_NONBLOCK
    assert sorted(stale_workdirs((str(tmp_path),))) == sorted(map(str, [killed, killed_early, server_exited]))
    zombie.wait()
    assert stale_workdirs((str(tmp_path / "missing"),)) == []


@pytest.mark.slow  # ~15 s (a server start, a kill, a second start)
def test_the_next_fersynth_warm_removes_the_folder_a_killed_one_left(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))  # short: a socket path over 90 bytes moves to /tmp
    try:
        environment = _environment(TMPDIR=str(temp))
        runner = subprocess.Popen(
            ["fersynth", "warm", "--", "sh", "-c", 'echo "$FERSYNTH_WARM" > socket; exec sleep 120'],
            cwd=tmp_path,
            env=environment,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        _wait_for(tmp_path / "socket", runner)
        os.killpg(runner.pid, signal.SIGKILL)  # no chance to clean up: `fersynth warm` and its command
        runner.wait()
        workdir = Path((tmp_path / "socket").read_text().strip()).parent
        server = int((workdir / "pids").read_text().split()[1])
        deadline = time.monotonic() + 120
        while _state(server) not in (None, "Z"):  # it notices its caller is gone once its imports are done
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert workdir.is_dir() and workdir.parent == temp
        mine = temp / "notes"
        mine.mkdir()
        result = subprocess.run(
            ["fersynth", "warm", "--", "true"], cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "folder(s) that killed runs left" in result.stderr  # (and any a killed run left in /tmp)
        assert not workdir.exists() and mine.is_dir()  # what is not a run's folder stays
        assert [path.name for path in temp.iterdir() if path.name.startswith("fersynth-warm-")] == []
    finally:
        shutil.rmtree(temp)
