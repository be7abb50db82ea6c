"""Helpers to SIGKILL a subprocess at a chosen moment (mid-update, mid-checkpoint-write)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORBAX_TMP = ".orbax-checkpoint-tmp"


class Process:
    """``python *args`` run from the repository root, its stdout/stderr going to files in ``log_dir``
    (a pipe nobody reads could fill up and stall the child)."""

    def __init__(self, args: Sequence[str], log_dir: str | os.PathLike, name: str = "run") -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.stdout_path = os.path.join(log_dir, f"{name}.stdout")
        self.stderr_path = os.path.join(log_dir, f"{name}.stderr")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        }
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, *args], stdout=stdout, stderr=stderr, cwd=REPO, env=env
            )

    def stdout(self) -> str:
        with open(self.stdout_path) as handle:
            return handle.read()

    def stderr(self) -> str:
        with open(self.stderr_path) as handle:
            return handle.read()

    def wait(self, timeout: float = 300.0) -> int:
        return self.popen.wait(timeout)

    def printed(self, line: str) -> bool:
        return line in self.stdout().splitlines()

    def kill_when(self, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        """SIGKILLs the process as soon as ``condition()`` holds; fails if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"the process exited (code {self.popen.returncode}) before the moment to kill it:\n"
                    + self.stderr()[-3000:]
                )
            if time.monotonic() > deadline:
                self.popen.kill()
                raise AssertionError(f"the moment to kill the process did not come within {timeout} s")
            time.sleep(0.002)
        self.popen.kill()
        self.popen.wait()


def writing(directory: str | os.PathLike, step: int | None = None) -> bool:
    """True while orbax writes a step (any, or ``step``) into ``directory``: its temporary folder exists."""
    if not os.path.isdir(directory):
        return False
    prefix = "" if step is None else f"{step}."
    return any(name.startswith(prefix) and ORBAX_TMP in name for name in os.listdir(directory))
