"""A headless Chromium driven over the Chrome DevTools Protocol (websocket-client), for the report's browser test.

    with Chromium.launch() as browser:
        page = browser.open(path, width=1280)
        page.evaluate("document.title"); page.click("th"); page.screenshot(out); page.errors

Also a command: `python -m tests.browser PAGE.html OUT.png [--height N]` saves a 1280-px-wide screenshot
(the README's picture of the toy-world report).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$CHROMIUM, or the first Chromium or Chrome on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if shutil.which(named) or Path(named).is_file() else None
    return next((shutil.which(name) for name in CANDIDATES if shutil.which(name)), None)


class Chromium:
    def __init__(self, process: subprocess.Popen, profile: str, port: int):
        self.process, self.profile, self.port = process, profile, port

    @classmethod
    def launch(cls, executable: str | None = None, timeout: float = 30.0) -> Chromium:
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no Chromium found (install Debian's `chromium` or set $CHROMIUM)")
        profile = tempfile.mkdtemp(prefix="halluc-chromium-")
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"Chromium did not start (exit code {process.poll()})")
            time.sleep(0.05)
        return cls(process, profile, int(port_file.read_text().split()[0]))

    def open(self, path: Path | str, width: int = 1280, height: int = 900, print_media: bool = False) -> Page:
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.load(Path(path).resolve().as_uri(), width, height, print_media)
        return page

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab: commands are sent and answered in order; events are kept (console errors, requests)."""

    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == event:
                return message
        raise TimeoutError(event)

    def load(self, url: str, width: int, height: int, print_media: bool) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        if print_media:
            self.send("Emulation.setEmulatedMedia", media="print")
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the first element matching `selector`."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView(); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, out: Path, full_page: bool = True, height: int | None = None) -> Path:
        params = {"format": "png", "captureBeyondViewport": full_page}
        if height is not None:
            params["clip"] = {"x": 0, "y": 0, "width": self.evaluate("window.innerWidth"), "height": height,
                              "scale": 1}
        elif full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        Path(out).write_bytes(base64.b64decode(self.send("Page.captureScreenshot", **params)["data"]))
        return Path(out)

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads, as the browser reported them."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    @property
    def requests(self) -> list[str]:
        """Every URL the page asked for, itself included."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--height"):
        print("usage: python -m tests.browser PAGE.html OUT.png [--height N]", file=sys.stderr)
        return 2
    with Chromium.launch() as browser:
        page = browser.open(argv[0])
        page.screenshot(Path(argv[1]), height=int(argv[3]) if len(argv) == 4 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
