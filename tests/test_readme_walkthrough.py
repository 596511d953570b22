"""The README's first-use walkthrough, run as a user runs it: the stack started by the README's own command (its
settings and `make up`), then its shell blocks, verbatim.

Only addresses and paths are rewritten (the stack runs on free ports with its own var/ folder); every curl, grep and
python3 line is the README's. A block that stops working fails here rather than on a new user's machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_stack import _wait_healthy, stack_env  # noqa: F401  (stack_env is a fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _walkthrough_blocks() -> list[str]:
    """The ```sh blocks of "Using the stack": how to start the stack, then the walkthrough (register → verify → login →
    predict → history → feedback → download)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Using the stack")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 4, "the start command and three walkthrough blocks; update this test with the README"
    return blocks


def _start_command(block: str) -> tuple[dict[str, str], list[str]]:
    """(settings, command) of the README's one-line start: ``NAME=value ... make up``."""
    (line,) = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    words = shlex.split(line, comments=True)
    settings = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    return settings, words[len(settings):]


def test_the_readme_walkthrough_works_verbatim(stack_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    start, *walkthrough = _walkthrough_blocks()
    settings, command = _start_command(start)
    assert command == ["make", "up"] and set(settings) == {"MLSTACK_STORAGE_KEEP_BY"}, (settings, command)
    # `make up` installs first when pyproject.toml or constraints.txt changed: not something a test does to a shared venv
    stale = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT).returncode
    assert stale == 0, "the venv is older than pyproject.toml/constraints.txt: run `make install`, then this test"
    base = {k: v for k, v in stack_env.items() if not k.startswith("MLSTACK_STORAGE_")}  # only the README's settings
    env = {**base, **settings}
    var = Path(env["MLSTACK_VAR_DIR"])
    gateway = f"127.0.0.1:{env['MLSTACK_GATEWAY_HTTP_PORT']}"
    work = tmp_path / "user"
    (work / "docs/examples").mkdir(parents=True)
    shutil.copy(ROOT / "docs/examples/digit.png", work / "docs/examples/digit.png")
    script = "\n".join(walkthrough)
    script = script.replace("localhost:8080", gateway).replace("var/outbox/", f"{var}/outbox/")
    # As typed in a terminal: `make up` from the checkout, its own process group so Ctrl+C (SIGINT) reaches all of it.
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_healthy(proc, env, {"triton", "bento", "gateway"})
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True,
                             timeout=240, env={**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    out = run.stdout
    assert run.returncode == 0, f"the walkthrough stopped (rc {run.returncode}):\n{out[-3000:]}\n{run.stderr[-3000:]}"
    assert '"error"' not in out, out
    # curl prints no newline after a body, so the code `echo`ed from the outbox follows register's JSON on its line
    assert re.search(r"\}(\d{6})\n", out), f"the verification code was not read out of the outbox:\n{out[:600]}"
    assert "email verified" in out, "verify-email took the code"
    assert '"setosa"' in out, "iris-svm's answer by feature name"
    assert re.search(r'"label":\s*"8"', out), "digits-cnn reads the shipped 8"
    assert "same bytes" in out, "the kept image downloads back byte for byte through its signed URL"
    assert (work / "back.png").read_bytes() == (ROOT / "docs/examples/digit.png").read_bytes(), "the 307 download"
