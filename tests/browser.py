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
    """One tab: :meth:`call` a DevTools method, :meth:`evaluate` JavaScript, :meth:`until` a condition holds;
    ``errors`` collects uncaught exceptions, ``console.error`` calls and failed loads (log entries of level
    error) seen so far."""

    def __init__(self, ws):
        self.ws, self.ids, self.errors = ws, itertools.count(1), []

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
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.25)
        return value

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}".strip())


@asynccontextmanager
async def chromium_page(chromium: str, profile: Path, width: int = 1366, height: int = 768):
    """A fresh headless Chromium (no network needed) and a DevTools session on its one tab; closed after."""
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
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ws_url = _page_socket(debug_port, browser)
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await page.call(domain)
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
