"""The ``gans`` command's entry point, and a warm interpreter for the pipeline's stages.

``dvc repro`` starts one process per stage, and each one pays the imports of torch, torchvision, MLflow and
torchmetrics again: seconds per stage, most of a tiny pipeline's wall time. A stage command (``gans prepare``,
``train``, ...) therefore hands its work to a warm process when one is running: a detached server that has
imported those libraries once and forks a child per stage. The child takes over the command's stdin, stdout
and stderr (passed over a Unix socket), its working directory, environment, umask, argv and ignored signals,
imports the project's own code fresh (so an edit is always seen) and runs the stage; the command waits and
exits with the child's status. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the command are passed on, and a
command that dies (SIGKILL, a killed process group) takes its child with it.

When no warm process answers, the command runs the stage itself, as always, and starts one in the background
for the next stage; a command that finds that one still importing waits for it (up to ``START_WAIT`` s). A
stage ends without the interpreter's teardown (see ``_exit_without_teardown``): seconds saved per stage. A warm
process serves only commands with the same interpreter, installed packages, project code folder, resource
limits and import-time environment (OMP_*, MKL_*, CUDA_*, PYTHON*, ...): anything else gets its own. It exits
after ``GANS_WARM_IDLE`` seconds (120) without a running stage. ``GANS_WARM=0`` turns it off (every stage then
runs in its own fresh interpreter).

This module imports only the standard library at the top: the command must start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys

STAGES = frozenset({"prepare", "augment", "evaluator", "train", "evaluate", "explore", "register"})
# The libraries a stage may import, preloaded by the warm process (each optional).
PRELOAD = ("numpy", "torch", "torch.optim", "torchvision", "torchvision.transforms.v2", "PIL.Image", "yaml", "tqdm",
           "mlflow", "mlflow.store.tracking.sqlalchemy_store", "torchmetrics", "torch_fidelity", "kornia", "psutil")
# Environment variables that libraries read once, at import or at load: a different value needs another process.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO", "CUDA_", "NVIDIA_", "PYTORCH_", "TORCH_", "PYTHON",
                   "LD_", "MALLOC_", "LC_", "LANG", "GANS_WARM")
# How long a stage command waits for a warm process that is still importing, before it runs the stage itself.
START_WAIT = 60.0
HANDED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_LEN = struct.Struct("!Q")
_STATUS = struct.Struct("!ci")


def enabled() -> bool:
    return (os.environ.get("GANS_WARM", "1") != "0" and sys.platform.startswith("linux")
            and hasattr(socket, "send_fds") and hasattr(os, "fork"))


def _key() -> str:
    """What a warm process must share with this command to run its stage exactly as the command would."""
    import resource
    import sysconfig

    here = os.path.dirname(os.path.abspath(__file__))
    packages = sysconfig.get_paths()["purelib"]
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    return hashlib.sha256(json.dumps({
        "python": sys.executable, "prefix": sys.prefix, "version": sys.version, "uid": os.getuid(), "code": here,
        "warm": os.stat(os.path.abspath(__file__)).st_mtime_ns,
        "packages": os.stat(packages).st_mtime_ns if os.path.isdir(packages) else 0, "limits": limits,
        "env": sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_ENV)),
    }, sort_keys=True).encode()).hexdigest()[:20]


def _socket_path(key: str) -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    folder = os.path.join(base, f"gans-warm-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.stat(folder).st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user")
    return os.path.join(folder, f"{key}.sock")


# --- the command's side -------------------------------------------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run_warm(path: str, argv: list[str]) -> int | None:
    """Run ``argv`` in the warm process at ``path``: the wait status of its child, or None when no warm process
    took the command (then nothing ran)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        ignored = [int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
                   and signal.getsignal(s) is signal.SIG_IGN]
        umask = os.umask(0)
        os.umask(umask)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "ignored": ignored, "path0": sys.path[0]}).encode()
        socket.send_fds(conn, [_LEN.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        reply = _recv_exact(conn, _STATUS.size)
    except OSError:
        conn.close()
        return None
    if len(reply) < _STATUS.size or reply[:1] != b"P":
        conn.close()  # the warm process went away before it started anything
        return None
    child = _STATUS.unpack(reply)[1]

    def hand_on(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in HANDED_ON:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, hand_on)
    reply = _recv_exact(conn, _STATUS.size)
    conn.close()
    if len(reply) < _STATUS.size or reply[:1] != b"X":
        print(f"error: the warm process quit before this stage (pid {child}) reported its end; rerun the same "
              "command to resume (GANS_WARM=0 runs stages in their own processes)", file=sys.stderr)
        return 1 << 8
    return _STATUS.unpack(reply)[1]


def run_when_ready(path: str, argv: list[str], wait: float = START_WAIT) -> int | None:
    """:func:`run_warm`, waiting up to ``wait`` seconds for a warm process that is still importing its libraries
    (started by the previous stage): the imports are paid once, not again by this command beside them."""
    import time

    deadline = time.monotonic() + wait
    status = run_warm(path, argv)
    while status is None and time.monotonic() < deadline and _starting(path):
        time.sleep(0.05)
        status = run_warm(path, argv)
    return status


def _starting(path: str) -> bool:
    """Whether the process named in ``path``'s lock file (a warm process, once it holds the lock) is alive."""
    try:
        with open(path + ".lock") as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return False
    return pid > 0 and bool(state) and state[0] not in "ZXx"  # a zombie is not importing anything


def read_request(conn: socket.socket, fds: list[int]) -> dict:
    """What :func:`run_warm` sends: the request, and the command's three streams appended to ``fds`` (which the
    caller closes if this raises)."""
    head, received, _, _ = socket.recv_fds(conn, _LEN.size, 3)
    fds.extend(received)
    head += _recv_exact(conn, _LEN.size - len(head))
    request = json.loads(_recv_exact(conn, _LEN.unpack(head)[0]))
    if len(fds) != 3:
        raise ValueError("three streams expected")
    return request


def _exit_like(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # the child died of a signal: so does the command, for whoever waits on it
        sys.stdout.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


def start(path: str) -> None:
    """Start a warm process for ``path`` in the background (it quits at once if another one holds the path)."""
    import subprocess

    # The process started here forks the warm process and exits at once, so the warm process is nobody's child:
    # killing this command's process tree (as a lost machine would) never takes it, nor other commands' stages.
    try:
        subprocess.run([sys.executable, "-m", "pipeline.warm", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", start_new_session=True,
                       close_fds=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        pass  # no warm process: every stage starts its own interpreter, as without this module


def main() -> None:
    """The ``gans`` command."""
    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] in STAGES and enabled():
        try:
            path = _socket_path(_key())
        except OSError:
            path = None
        if path:
            status = run_when_ready(path, argv)
            if status is not None:
                _exit_like(status)
            start(path)
    from pipeline.cli import main as cli_main

    if len(argv) > 1 and argv[1] in STAGES:
        _exit_without_teardown(cli_main)
    sys.exit(cli_main())


# --- the warm process --------------------------------------------------------------------------------------


def _child(conn: socket.socket, request: dict, fds: list[int], closing: list) -> None:
    """In the forked child: become the command (its streams, folder, environment, signals), run it, exit."""
    import io

    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    for sig in request["ignored"]:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):
            pass
    try:  # die with the warm process (PR_SET_PDEATHSIG), so that no stage outlives its command's watcher
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    for thing in closing:
        thing.close() if hasattr(thing, "close") else os.close(thing)
    conn.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    sys.path[0] = request["path0"]
    encoding = "utf-8" if os.environ.get("PYTHONUTF8") == "1" else io.text_encoding(None)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding,
                                                   line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=encoding,
                                                   errors="backslashreplace", line_buffering=True)
    if "numpy" in sys.modules:  # a fresh interpreter would have drawn its own seed
        sys.modules["numpy"].random.seed()
    from pipeline.cli import main as cli_main

    _exit_without_teardown(cli_main)


def _exit_without_teardown(run) -> None:
    """Run ``run`` (the CLI's main) and end the process as the interpreter's exit would, less its teardown.

    A stage ends by exiting, and tearing down an interpreter that holds torch, torchvision and MLflow frees
    every object they made: about 1.3 s on a 2-core machine, and about 2 s in a child forked from the warm
    process, where freeing touches (and so copies) every page of the heap it shares. That was most of a tiny
    stage's time. What an exit owes the stage is done first: non-daemon threads are joined, the atexit handlers
    run (MLflow's, logging's, multiprocessing's, weakref.finalize's) and the standard streams are flushed. An
    exception other than SystemExit takes the ordinary way out (its traceback, then the teardown)."""
    import atexit
    import threading

    try:
        code = run()
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # as sys.exit("message") does
        print(code, file=sys.stderr)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first on its way out
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF)


def cuda_driver_loaded(maps: str | None = None) -> bool:
    """Whether the CUDA driver library is mapped into this process (``maps``: /proc/self/maps' text). Once it
    is, CUDA may be initialised, and CUDA does not survive a fork."""
    if maps is None:
        with open("/proc/self/maps") as f:
            maps = f.read()
    return any(os.path.basename(line.split()[-1]).startswith("libcuda.so") for line in maps.splitlines()
               if len(line.split()) >= 6)


def serve(path: str, idle: float) -> None:
    import fcntl
    import gc
    import importlib
    import select
    import time

    lock = open(path + ".lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another warm process serves this path, or is importing to serve it
    lock.truncate(0)
    lock.write(str(os.getpid()))  # commands that find no socket yet wait while this process lives (_starting)
    lock.flush()
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # torch.cuda.is_available() without initialising CUDA
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional library missing or broken: the stage imports it itself
            pass
    if cuda_driver_loaded():
        lock.truncate(0)
        return  # a library touched the GPU at import: a forked child could not use CUDA, so no warm process
    gc.freeze()  # the children's collections skip what is imported here, so they do not copy its pages
    if os.path.exists(path):
        os.unlink(path)  # left by one that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    me, children, watched = os.getpid(), {}, {}
    last = time.monotonic()
    try:
        while True:
            timeout = None if children else last + idle - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            ready, _, _ = select.select([listener, wake_r, *watched], [], [], timeout)
            if wake_r in ready:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            while children:  # reap, and report each status to its command
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                conn = children.pop(pid, None)
                if conn is not None:
                    watched.pop(conn, None)
                    try:
                        conn.sendall(_STATUS.pack(b"X", status))
                    except OSError:
                        pass
                    conn.close()
                last = time.monotonic()
            for conn in [c for c in ready if c in watched]:
                try:
                    gone = not conn.recv(64)
                except OSError:
                    gone = True
                if gone:  # the command died: its stage goes too
                    try:
                        os.kill(watched[conn], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    watched.pop(conn)
            if listener in ready:
                conn, _ = listener.accept()
                fds: list[int] = []
                try:
                    conn.settimeout(10)
                    request = read_request(conn, fds)
                except (OSError, ValueError, struct.error):
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                conn.settimeout(None)
                pid = os.fork()
                if pid == 0:
                    _child(conn, request, fds, [listener, lock, wake_r, wake_w, *watched])
                for fd in fds:
                    os.close(fd)
                children[pid], watched[conn] = conn, pid
                try:
                    conn.sendall(_STATUS.pack(b"P", pid))
                except OSError:  # the command is gone already: so is its stage
                    os.kill(pid, signal.SIGKILL)
    finally:
        if os.getpid() == me:
            try:
                for leftover in (path, path + ".lock"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)
            finally:
                lock.close()


if __name__ == "__main__":
    if os.fork():
        os._exit(0)
    serve(sys.argv[1], float(os.environ.get("GANS_WARM_IDLE", "120")))
