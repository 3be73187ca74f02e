"""Scratch projects, shared by the tests (through conftest.py) and the benchmarks (bench/):
the tests' tiny workload, and real git + DVC projects holding the pipeline's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# Small enough for a 2-core CPU: every stage of the pipeline in a few seconds.
TINY = {
    "data": {"source": "digits", "resolution": 16, "max_images": 400},
    "train": {"steps": 40, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, "sample_every": 20,
              "eval_every": 20, "eval_samples": 50},
    "model": {"width": 16, "z_dim": 16},
    "augment": {"ada": {"enabled": True}},  # off in params.yaml; the tiny runs keep the ADA path covered end to end
    "evaluate": {"num_samples": 200, "evaluator_epochs": 3, "batch_size": 100, "kid_subset_size": 50},
    "explore": {"probes": 8, "invert": 4, "invert_steps": 5, "encoder_steps": 20, "learned_steps": 5},
}


def tiny_params(extra: dict | None = None) -> dict:
    """The repo's params.yaml with the TINY values (and ``extra``) merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for source in (TINY, extra or {}):
        for section, values in source.items():
            params.setdefault(section, {}).update(values)
    return params


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin first on PATH, no inherited MLflow URIs, and a git identity."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    for key, value in (("GIT_AUTHOR_NAME", "scratch"), ("GIT_AUTHOR_EMAIL", "scratch@example.com"),
                       ("GIT_COMMITTER_NAME", "scratch"), ("GIT_COMMITTER_EMAIL", "scratch@example.com")):
        env.setdefault(key, value)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 900, check: bool = True,
        **env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; fail with its output tail when it fails and ``check`` is set."""
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def make_project(path: Path, params: dict) -> Path:
    """A git + DVC project with the pipeline's dvc.yaml, code (the stages' deps) and ``params``."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    for pkg in ("gans", "pipeline"):
        shutil.copytree(ROOT / pkg, path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "init"], path)
    return path


def stop_process(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s (a Prefect worker or server can sit in its shutdown)."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port nothing listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a log file, headed by its path, for a failure message."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError as err:
        return f"--- {log}: unreadable ({err})"
    return f"--- {log} (last {min(chars, len(text))} of {len(text)} characters)\n{text[-chars:]}"


def serve_model(repo: Path, *args: str, log: Path | None = None,
                timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``gans serve ARGS`` in ``repo`` on a free port; (process, base URL) once /ping answers.

    The server's output goes to ``log`` (default: ``serve-REPO-PORT.log`` beside ``repo``, never inside it,
    since other tests copy repos), not to a pipe: nobody reads a pipe while the server runs, and once full it
    would block the server. A server that exits or does not answer in ``timeout`` s fails with the log's tail."""
    import time

    import requests

    port = free_port()
    log = Path(log) if log is not None else repo.parent / f"serve-{repo.name}-{port}.log"
    with log.open("w") as out:
        # as from a shell where the venv is not activated: gans serve must find uvicorn by itself
        env = subprocess_env()
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p and p != BIN)
        proc = subprocess.Popen([f"{BIN}/gans", "serve", "--port", str(port), *args], cwd=repo, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gans serve exited with status {proc.returncode}:\n{tail(log)}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    raise AssertionError(f"the model server (gans serve) did not answer {url}/ping in {timeout:.0f} s:\n{tail(log)}")


def model_files(repo: Path, model_uri: str) -> Path:
    """The files of a registered model (``models:/NAME/N``) in ``repo``'s sqlite store, downloaded."""
    import mlflow

    uri = f"sqlite:///{repo}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


class KillAt:
    """A trainer reporter that stops training (as a kill would) when step ``at`` reports, after the checkpoint
    before it."""

    def __init__(self, at: int) -> None:
        self.at = at

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if step == self.at:
            raise KeyboardInterrupt

    def image(self, step: int, grid) -> None:
        pass

    def series(self, key: str, points) -> None:
        pass


def state_differences(a, b, path: str = "") -> list[str]:
    """Paths where two nested checkpoint states differ (tensors compared exactly)."""
    import torch

    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [path]
    if isinstance(a, dict):
        keys = set(a) | set(b)
        return [p for k in keys for p in (state_differences(a[k], b[k], f"{path}/{k}") if k in a and k in b
                                          else [f"{path}/{k}"])]
    if isinstance(a, (list, tuple)):
        return [f"{path} length"] if len(a) != len(b) else [p for i, (x, y) in enumerate(zip(a, b))
                                                          for p in state_differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def png_base64(image) -> str:
    """uint8 (C, H, W) -> a base64 PNG, as a serving row's ``image``."""
    import base64

    from torchvision.io import encode_png

    return base64.b64encode(encode_png(image).numpy().tobytes()).decode()


def invoke_rows(url: str, rows: list[dict]):
    """POST ``rows`` as dataframe_records to a model server's /invocations."""
    import requests

    return requests.post(f"{url}/invocations", json={"dataframe_records": rows}, timeout=60)
