"""User errors through the installed ``gans`` console script, run as a user runs it: exit status 2, one
``error:`` line, no traceback. In process (test_bad_inputs.py, test_params.py) an unexpected exception
propagates to pytest and is never printed, so "no traceback" can only be seen here; the last two tests
show that the check fires when a command crashes, or prints a traceback before a well-formed error."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, subprocess_env
from test_bad_inputs import SETUPS, _inputs, catalogue

pytestmark = pytest.mark.e2e  # each command starts a Python that imports torch: seconds apiece

GANS = Path(BIN) / "gans"

# A subset of docs/bad-inputs.md, one or two rows of each kind.
ROWS = {
    "2": "a mistyped value",
    "53": "a malformed -S",
    "35": "a data file of the wrong dtype",
    "33": "a corrupt image in a folder",
    "45": "a check that needs the prepared data",
    "43": "a missing stage output",
    "51": "a missing params file",
    "50": "sample given a file that is not a generator",
}


def gans(ws: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``gans ARGS`` in ``ws`` through the console script."""
    assert GANS.is_file(), f"{GANS} is not installed (pip install -e .)"
    return subprocess.run([str(GANS), *args], cwd=ws, env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=300, check=False)


def assert_user_error(proc: subprocess.CompletedProcess, what: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line on stderr and it is the last. The line."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    stderr = f"; stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2, f"{what}: exit status {proc.returncode}, not 2{stderr}"
    assert "Traceback" not in proc.stderr, f"{what}: a traceback{stderr}"
    assert len(errors) == 1, f"{what}: {len(errors)} 'error:' lines, not 1{stderr}"
    assert proc.stderr.strip().splitlines()[-1] == errors[0], f"{what}: the 'error:' line is not the last{stderr}"
    return errors[0]


def _rows() -> list[tuple[str, str, str, str]]:
    rows = {row[0]: row for row in catalogue()}
    missing = sorted(set(ROWS) - set(rows))
    assert not missing, f"rows {missing} are no longer in docs/bad-inputs.md: pick others for ROWS"
    return [rows[n] for n in ROWS]


@pytest.mark.parametrize("number, setup, command, message", _rows(), ids=lambda v: str(v)[:40])
def test_console_script_reports_a_bad_input_in_one_line(number: str, setup: str, command: str, message: str,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _inputs(tmp_path)
    if setup != "-":  # the setup is not what is tried: run in process, as test_bad_inputs.py does
        from pipeline.cli import main

        monkeypatch.chdir(tmp_path)
        for stage in ("prepare", "augment"):
            assert main([stage, *SETUPS[setup]]) == 0
    args = shlex.split(command)
    if setup != "-" and not any(a.startswith("data.") for a in args):
        args += SETUPS[setup]
    line = assert_user_error(gans(tmp_path, *args), f"row {number} ({ROWS[number]}): gans {command}")
    for fragment in message.split("…"):
        assert fragment in line, f"row {number}: {fragment!r} not in {line!r}"


# test_params.py's CLI check, and its malformed params files, through the console script.
@pytest.mark.parametrize("args, start, fragment", [
    (["prepare", "--params", str(ROOT / "params.yaml"), "-S", "data.resolution=4"],
     "error: data.resolution: got 4; ", "expected 8..256"),
    (["train", "--params", "list.yaml"], "error: list.yaml: ", "mapping of sections"),
], ids=["bad-override", "not-a-mapping"])
def test_console_script_reports_bad_params_without_traceback(args: list[str], start: str, fragment: str,
                                                             tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(["a", "b"]))
    proc = gans(tmp_path, *args)
    line = assert_user_error(proc, f"gans {shlex.join(args)}")
    assert proc.stderr.startswith(start), proc.stderr  # nothing before the error line
    assert fragment in line, line


# Bugs, injected through a sitecustomize module that replaces load_params, which every command calls first.
CRASH = '''
import pipeline.params


def load_params(*args, **kwargs):
    raise RuntimeError("injected: a bug, not a user error")


pipeline.params.load_params = load_params
'''
TRACEBACK_THEN_USER_ERROR = '''
import traceback

import pipeline.params
from gans.config import ConfigError


def load_params(*args, **kwargs):
    try:
        raise KeyError("injected")
    except KeyError:
        traceback.print_exc()
    raise ConfigError("injected: a user error after a printed traceback")


pipeline.params.load_params = load_params
'''


def _with_hook(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(code)
    (tmp_path / "ws").mkdir()
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return gans(tmp_path / "ws", "prepare", "--params", str(ROOT / "params.yaml"), PYTHONPATH=path)


def test_an_unexpected_exception_shows_its_traceback_and_fails_the_check(tmp_path: Path) -> None:
    """A bug is not dressed up as a user error: status 1, its traceback shown, and assert_user_error
    refuses it."""
    proc = _with_hook(tmp_path, CRASH)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RuntimeError: injected: a bug, not a user error" in proc.stderr
    with pytest.raises(AssertionError, match="exit status 1, not 2"):
        assert_user_error(proc, "gans prepare with a bug")


def test_a_traceback_printed_before_a_user_error_fails_the_check(tmp_path: Path) -> None:
    """Status 2 and a last line that reads well are not enough: the traceback check fires on its own."""
    proc = _with_hook(tmp_path, TRACEBACK_THEN_USER_ERROR)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.strip().splitlines()[-1] == "error: injected: a user error after a printed traceback"
    with pytest.raises(AssertionError, match="a traceback"):
        assert_user_error(proc, "gans prepare printing a traceback")
