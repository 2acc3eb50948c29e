"""A live server for the tests: `serve.run_server` (Hypercorn, as the command runs it) in
a thread on a free localhost port."""

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from jaxmnist.use import serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """The base URL of `app` served by `serve.run_server` (Hypercorn, as the command
    runs it) in a thread on a free localhost port; stopped (bounded) afterwards."""
    port, stop = free_port(), threading.Event()

    async def until_stopped():
        while not stop.is_set():
            await asyncio.sleep(0.05)

    thread = threading.Thread(target=serve.run_server, args=(app, "127.0.0.1", port, until_stopped),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the server did not start within 30 s")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive(), "server thread did not stop"
