"""Headless Chromium over the DevTools protocol, for tests that must see a page as a reader does: scripts run,
console errors collected, values read from the live DOM."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

from tests.conftest import free_port


class Page:
    """One tab: :meth:`call` a DevTools method, :meth:`evaluate` JavaScript, :meth:`until` a condition holds,
    :meth:`open` a page and let it settle. ``errors`` collects uncaught exceptions, ``console.error`` /
    ``console.assert`` calls, log entries of level error and failed loads seen so far; ``warnings`` the
    ``console.warn`` calls and log entries of level warning."""

    def __init__(self, ws):
        self.ws, self.ids, self.errors, self.warnings = ws, itertools.count(1), [], []

    async def call(self, method: str, **params):
        number = next(self.ids)
        await self.ws.send_json({"id": number, "method": method, "params": params})
        async for message in self.ws:
            data = message.json()
            if data.get("id") == number:
                assert "error" not in data, data
                return data.get("result", {})
            self._record(data)
        raise AssertionError("the browser closed the connection")

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def until(self, expression: str, seconds: float = 90):
        deadline = time.monotonic() + seconds
        while not (value := await self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}; {self.errors}"
            await asyncio.sleep(0.25)
        return value

    async def open(self, url: str, ready: str = "true", settle: float = 1.0, seconds: float = 90):
        """Navigate to ``url`` with fresh ``errors`` and ``warnings``, wait until the page is loaded and ``ready``
        (a JS expression) is truthy, give late events (a favicon, deferred scripts) ``settle`` seconds to
        arrive, and return the value of ``ready``."""
        self.errors, self.warnings = [], []
        await self.call("Page.navigate", url=url)
        value = await self.until(f"document.readyState === 'complete' && ({ready})", seconds)
        await asyncio.sleep(settle)
        await self.evaluate("0")  # reads the events that arrived meanwhile
        return value

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            text = " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", []))
            (self.warnings if params["type"] == "warning" else self.errors).append(f"console: {text}")
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            text = f"{params['entry'].get('text')} {params['entry'].get('url', '')}".strip()
            (self.warnings if params["entry"]["level"] == "warning" else self.errors).append(text)
        elif method == "Network.loadingFailed":
            self.errors.append(f"load failed: {params.get('errorText')}")


@asynccontextmanager
async def chromium_page(chromium: str, profile: Path, width: int = 1366, height: int = 768, offline: bool = False):
    """A fresh headless Chromium and a DevTools session on its one tab (console, log, network and page events
    recorded); closed after. ``offline``: no host name resolves, as offline as it gets."""
    import aiohttp

    debug_port = free_port()
    browser = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={debug_port}",
            *(["--host-resolver-rules=MAP * ~NOTFOUND"] if offline else []),
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ws_url = _page_socket(debug_port, browser)
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Runtime", "Log", "Network", "Page"):
                await page.call(f"{domain}.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            yield page
    finally:
        browser.terminate()
        browser.wait(timeout=30)


def _page_socket(debug_port: int, browser: subprocess.Popen, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5) as reply:
                targets = json.loads(reply.read())
            return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        except (OSError, StopIteration):
            assert browser.poll() is None, f"chromium exited with {browser.returncode}"
            assert time.monotonic() < deadline, f"chromium gave no DevTools page within {seconds} s"
            time.sleep(0.3)
