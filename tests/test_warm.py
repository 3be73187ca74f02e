"""The warm process behind the stage commands (pipeline/warm.py): a stage command that finds none runs in its
own interpreter and starts one; the next is run by a child of the warm process with the command's folder,
streams and exit status; signals to the command reach the stage, and a killed command takes its stage with it.
Each test has its own warm process (its own XDG_RUNTIME_DIR)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from scratch import BIN, ROOT, free_port, subprocess_env

SMALL = ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=16"]
TRAIN = [*SMALL, "-S", "train.eval_every=0", "-S", "train.sample_every=100000", "-S", "train.batch_size=16",
         "-S", "model.width=8", "-S", "model.z_dim=8"]


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = subprocess_env(XDG_RUNTIME_DIR=str(runtime), GANS_WARM_IDLE="60", GANS_WARM="1")
    yield repo, env
    for proc in _warm_processes(runtime):
        proc.kill()


def _warm_processes(runtime: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "pipeline.warm" in cmd and any(str(runtime) in part for part in cmd):
            found.append(proc)
    return found


def _warm(env: dict[str, str], timeout: float = 120) -> psutil.Process:
    """The project's warm process, once it listens."""
    runtime = Path(env["XDG_RUNTIME_DIR"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _warm_processes(runtime)
        if procs and list(runtime.glob("gans-warm-*/*.sock")):
            return procs[0]
        time.sleep(0.2)
    raise AssertionError(f"no warm process listens under {runtime}")


def _gans(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"{BIN}/gans", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def _stage_child(warm: psutil.Process, repo: Path, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in warm.children():
            try:
                if child.cwd() == str(repo):
                    return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    raise AssertionError("the warm process never ran the stage")


def test_a_stage_command_starts_a_warm_process_and_the_next_one_runs_there(project) -> None:
    repo, env = project
    cold = _gans(repo, env, "prepare", *SMALL)
    assert cold.returncode == 0, cold.stderr[-2000:]
    warm = _warm(env)
    assert warm.ppid() != os.getpid()  # nobody's child: the command that started it is gone
    # A user error through the warm process: the same exit status and the same one line as without it.
    lost = _gans(repo, env, "evaluate", "-S", "train.device=cpu")
    alone = _gans(repo, {**env, "GANS_WARM": "0"}, "evaluate", "-S", "train.device=cpu")
    assert lost.returncode == alone.returncode == 2
    assert lost.stderr == alone.stderr and lost.stderr.startswith("error: ")
    # The stage runs in a child of the warm process, in the command's folder, and writes there.
    (repo / "data/augmented").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([f"{BIN}/gans", "augment", *SMALL], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert '"augmented_count": 90' in out and (repo / "data/augmented/spec.json").is_file()
    assert warm.is_running()


def test_signals_reach_the_stage_and_a_killed_command_takes_its_stage_along(project) -> None:
    repo, env = project
    tracking = ["-S", f"tracking.uri=http://127.0.0.1:{free_port()}"]  # nothing listens: no tracking
    for stage in ("prepare", "augment"):
        done = _gans(repo, env, stage, *SMALL)
        assert done.returncode == 0, done.stderr[-2000:]
    warm = _warm(env)
    long = [f"{BIN}/gans", "train", *TRAIN, *tracking, "-S", "train.steps=1000000", "-S", "train.checkpoint_every=5"]
    # SIGINT (Ctrl-C) to the command: the stage stops as it would in its own process, resumable.
    proc = subprocess.Popen(long, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    stage = _stage_child(warm, repo)
    _wait_for(lambda: list((repo / "models/checkpoints").glob("ckpt-*.pt")), "a first checkpoint")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; rerun the same command to resume from the last checkpoint" in err
    assert not stage.is_running()
    # SIGKILL to the command (a killed process group, a lost machine): its stage dies with it, the warm
    # process lives on and serves the next command.
    proc = subprocess.Popen(long, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = _stage_child(warm, repo)
    proc.kill()
    proc.wait()
    _wait_for(lambda: not stage.is_running() or stage.status() == psutil.STATUS_ZOMBIE, "the stage to die", 30)
    assert warm.is_running()
    done = _gans(repo, env, "train", *TRAIN, *tracking, "-S", "train.steps=2")
    assert done.returncode == 0, done.stderr[-2000:]


def _interruptible() -> None:
    """As in a terminal: SIGINT not ignored (a process inherits an ignored SIGINT, and pytest's may have one)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_no_warm_process_once_the_cuda_driver_is_mapped() -> None:
    """CUDA does not survive a fork: a warm process whose imports mapped the driver library stops."""
    from pipeline.warm import cuda_driver_loaded

    line = "7f3a1c000000-7f3a1c200000 r-xp 00000000 103:02 1234 {}"
    assert cuda_driver_loaded(line.format("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"))
    assert not cuda_driver_loaded(line.format("/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12"))
    assert not cuda_driver_loaded(line.format("/usr/lib/x86_64-linux-gnu/libc.so.6"))


EXIT_PROBE = """
import atexit, os, sys, threading, time
from pipeline.warm import _exit_without_teardown

out = sys.argv[1]

def stage():
    def late():
        time.sleep(0.3)
        open(out + ".thread", "w").close()
    threading.Thread(target=late).start()
    atexit.register(lambda: open(out + ".atexit", "w").close())
    sys.stdout.write("buffered, no newline")
    return {result}

_exit_without_teardown(stage)
print("not reached")
"""


@pytest.mark.parametrize(("result", "code", "stderr"), [("3", 3, ""), ("None", 0, ""),
                                                        ("sys.exit('gone: bad key')", 1, "gone: bad key\n")])
def test_a_stage_skips_only_the_teardown_of_its_exit(tmp_path: Path, result: str, code: int, stderr: str) -> None:
    """A stage ends without the interpreter's teardown (seconds of freeing a heap shared with the warm process),
    but with everything else an exit owes it: its threads finish, its atexit handlers run, its output is flushed,
    and its status (a return value or SystemExit) is the command's."""
    out = tmp_path / "probe"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as for a stage
    proc = subprocess.run([f"{BIN}/python", "-c", EXIT_PROBE.format(result=result), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "buffered, no newline" and proc.stderr == stderr
    assert (tmp_path / "probe.thread").is_file() and (tmp_path / "probe.atexit").is_file()


def _serve_once(path: Path, pid: int, status: int) -> None:
    """Listen at ``path`` like a warm process and report one command's stage (``pid``) as ended with ``status``."""
    import socket

    from pipeline.warm import _STATUS, read_request

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        conn, _ = listener.accept()
        with conn:
            fds: list[int] = []
            assert read_request(conn, fds)["argv"] == ["gans", "train"]
            for fd in fds:
                os.close(fd)
            conn.sendall(_STATUS.pack(b"P", pid) + _STATUS.pack(b"X", status))


def test_a_stage_command_waits_for_a_warm_process_that_is_still_importing(tmp_path: Path) -> None:
    """The lock file names a live process and no socket listens yet: the command waits and is served once the
    socket appears. A lock file naming a dead or zombie process, or nobody, makes it run the stage itself."""
    import threading

    from pipeline.warm import _starting, run_when_ready

    path = tmp_path / "key.sock"
    importing = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "key.sock.lock").write_text(str(importing.pid))
        server = threading.Thread(target=lambda: (time.sleep(1.0), _serve_once(path, importing.pid, 3 << 8)),
                                  daemon=True)
        server.start()
        assert run_when_ready(str(path), ["gans", "train"], wait=60) == 3 << 8
        server.join()
        path.unlink()
        assert _starting(str(path))
        importing.kill()
        _wait_for(lambda: psutil.Process(importing.pid).status() == psutil.STATUS_ZOMBIE, "a zombie", 30)
        assert not _starting(str(path))  # not reaped yet, and importing nothing
        importing.wait()
        assert not _starting(str(path))
        assert run_when_ready(str(path), ["gans", "train"], wait=60) is None  # the command runs the stage itself
        (tmp_path / "key.sock.lock").write_text("")  # a warm process that quit (the CUDA case)
        assert not _starting(str(path))
    finally:
        importing.kill()
        importing.wait()
