"""Shared fixtures: tiny params, a real DVC project in a temporary git repo, one
Prefect server for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Prefect binds its console log handler to the stream of the moment it first configures logging; do it
# now, before a test's capsys swaps in a stream that is closed when that test ends.
from prefect.logging.configuration import setup_logging  # noqa: E402

setup_logging()

# The tiny workload and scratch git + DVC projects live in scratch.py (the benchmarks use them too);
# the tests import them from here.
from scratch import (BIN, ROOT, TINY, KillAt, invoke_rows, make_project, model_files, png_base64,  # noqa: E402, F401
                     run, serve_model, state_differences, subprocess_env, tail, tiny_params)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one real `dvc repro`, shared by the end-to-end tests and copied by several:
    read it, never write in it (a test that runs commands which write copies it into its own tmp_path)."""
    repo = make_project(tmp_path_factory.mktemp("project"), tiny_params())
    run(["dvc", "repro"], repo)
    return repo


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (it takes ~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
