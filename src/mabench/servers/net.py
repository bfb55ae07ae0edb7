"""Loopback networking helpers: free ports, port checks, readiness waits."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when binding ``host:port`` fails, i.e. some process already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def answers(url: str, timeout_s: float = 2.0, path: str = "/") -> bool:
    """True when the server at ``url`` answers ``GET <path>`` with 200 (``/``: an
    Ollama-compatible server; llama.cpp's answers ``/health``)."""
    return status_of(url, path, timeout_s=timeout_s) == 200


def status_of(
    url: str, path: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0
) -> int | None:
    """The HTTP status of ``GET <url><path>``, or None when nothing answers.

    With the standard library's client: a check is one request, and an httpx client would
    build an SSL context each time (~10 ms; the pool checks its servers in every job)."""
    target = urlsplit(url.rstrip("/") + path)
    https = target.scheme == "https"
    connection = (HTTPSConnection if https else HTTPConnection)(
        target.hostname or LOOPBACK, target.port, timeout=timeout_s
    )
    try:
        query = f"?{target.query}" if target.query else ""
        connection.request("GET", (target.path or "/") + query, headers=headers or {})
        return connection.getresponse().status
    except (OSError, HTTPException):
        return None
    finally:
        connection.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
