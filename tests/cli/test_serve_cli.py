"""`halluc serve`: bad options are one line and exit 2 before any weights load; a live server answers, and
SIGTERM lets the request in flight finish before the process exits 0."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from halluc.cli import app
from tests.serve.live import data_uri, image_message

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "halluc" / "assets" / "example.png"


@pytest.mark.parametrize("extra,pattern", [
    (["--model", "lava"], "unknown model 'lava'"),
    (["--method", "vdc"], "unknown method 'vdc'"),
    (["--method", "vcd", "--alpah", "1"], "method 'vcd' has no parameter 'alpah'"),
    (["--max-batch-size", "0"], "max-batch-size must be a positive integer"),
    (["--default-max-tokens", "4096"], "default-max-tokens .* exceeds max-tokens"),
    (["--image-dir", "/no/such/dir"], "image directory not found"),
    (["--port", "70000"], "port must be in 0..65535"),
    (["--dtype", "float8"], "unknown dtype 'float8'"),
])
def test_bad_options_are_one_line_before_loading(extra, pattern):
    import re

    args = ["serve", "--model", "toy-llava", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_and_shuts_down_gracefully():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HALLUC_API_KEY": "k"}
    proc = subprocess.Popen([sys.executable, "-m", "halluc", "serve", "--model", "toy-llava", "--port", str(port),
                             "--method", "vcd", "--max-wait-ms", "1500"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(base + "/health", headers={"Authorization": "Bearer k"}))
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        body = json.dumps({"model": "toy-llava", "max_tokens": 8,
                           "messages": image_message(data_uri(IMAGE), "Is there a cup in the image?")}).encode()
        request = urllib.request.Request(base + "/v1/chat/completions", data=body, headers={
            "Authorization": "Bearer k", "Content-Type": "application/json"})
        replies = []
        asking = threading.Thread(target=lambda: replies.append(urllib.request.urlopen(request, timeout=60)))
        asking.start()
        time.sleep(0.5)  # the request now waits in its batch (max wait 1.5 s)
        proc.send_signal(signal.SIGTERM)
        asking.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stderr.read()
    assert replies and replies[0].status == 200, log
    answer = json.loads(replies[0].read())
    assert answer["halluc"]["method"] == ["vcd"] and answer["choices"][0]["message"]["content"]
    assert "Uvicorn running on http://127.0.0.1" in log and "Finished server process" in log
