"""`fersynth warm -- COMMAND`: fersynth commands started by COMMAND run in forks of one server that has
imported the heavy libraries; they must behave exactly like new processes (output bytes, exit codes,
streams, working directory, environment, umask), fall back to a cold start when they cannot be served
alike, and stop when their caller is stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
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
