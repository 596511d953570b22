"""The README's first-use walkthrough, run as a user runs it: its shell blocks, verbatim, against a real `mlstack up`.

Only addresses and paths are rewritten (the stack runs on free ports with its own var/ folder); every curl, grep and
python3 line is the README's. A block that stops working fails here rather than on a new user's machine.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_stack import MLSTACK, _wait_healthy, stack_env  # noqa: F401  (stack_env is a fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _walkthrough_blocks() -> list[str]:
    """The ```sh blocks of "Using the stack" (register → verify → login → predict → history → feedback → download)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Using the stack")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "the walkthrough has three shell blocks; update this test with the README"
    return blocks


def test_the_readme_walkthrough_works_verbatim(stack_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = {**stack_env, "MLSTACK_STORAGE_KEEP_BY": json.dumps({"classify_image": "input"})}  # the README's setting
    var = Path(env["MLSTACK_VAR_DIR"])
    gateway = f"127.0.0.1:{env['MLSTACK_GATEWAY_HTTP_PORT']}"
    work = tmp_path / "user"
    (work / "docs/examples").mkdir(parents=True)
    shutil.copy(ROOT / "docs/examples/digit.png", work / "docs/examples/digit.png")
    script = "\n".join(_walkthrough_blocks())
    script = script.replace("localhost:8080", gateway).replace("var/outbox/", f"{var}/outbox/")
    proc = subprocess.Popen([*MLSTACK, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(proc, env, {"triton", "bento", "gateway"})
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True,
                             timeout=240, env={**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
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
