"""Checksummed downloads, against a loopback HTTP server: verified files are cached, bad ones never land."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyfm.data.download import cache_dir, download, sha256_file
from tinyfm.errors import DataError

GOOD = b"the real file\n" * 1000
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving `files` (path -> bytes) and counting requests per path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                server.requests[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval: shutdown() waits for one poll, 0.5 s by default.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    files = {"/good.bin": GOOD, "/corrupt.bin": GOOD[:-1] + b"X"}
    with Server(files) as s:
        yield s


def test_downloads_verifies_and_caches(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "sub" / "good.bin"
    assert download(f"{server.url}/good.bin", dest, GOOD_SHA) == dest
    assert dest.read_bytes() == GOOD
    assert download(f"{server.url}/good.bin", dest, GOOD_SHA.upper()) == dest
    assert server.requests["/good.bin"] == 1  # the verified copy is reused, not fetched again
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good.bin"]


def test_corrupt_download_is_rejected_and_not_cached(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "corrupt.bin"
    url = f"{server.url}/corrupt.bin"
    with pytest.raises(DataError) as e:
        download(url, dest, GOOD_SHA)
    message = str(e.value)
    actual = hashlib.sha256(GOOD[:-1] + b"X").hexdigest()
    assert url in message and GOOD_SHA in message and actual in message
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_a_wrong_cached_copy_is_fetched_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "good.bin"
    dest.write_bytes(b"stale or damaged")
    download(f"{server.url}/good.bin", dest, GOOD_SHA)
    assert dest.read_bytes() == GOOD
    assert server.requests["/good.bin"] == 1


def test_http_error_names_the_url(server: Server, tmp_path: Path) -> None:
    url = f"{server.url}/missing.bin"
    with pytest.raises(DataError, match="404") as e:
        download(url, tmp_path / "missing.bin", GOOD_SHA)
    assert url in str(e.value)
    assert not (tmp_path / "missing.bin").exists()


def test_unreachable_server_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DataError, match="download failed") as e:
        download(url, tmp_path / "x.bin", GOOD_SHA, timeout=5)
    assert url in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_silent_without_a_terminal(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    download(f"{server.url}/good.bin", tmp_path / "good.bin", GOOD_SHA)
    assert capsys.readouterr() == ("", "")


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    download(f"{server.url}/good.bin", tmp_path / "good.bin", GOOD_SHA)
    assert (tmp_path / "good.bin").read_bytes() == GOOD
    assert "good.bin" in terminal.getvalue()  # the bar was drawn (and, being transient, erased)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYFM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TINYFM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "tinyfm"


def test_sha256_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(GOOD)
    assert sha256_file(tmp_path / "f") == GOOD_SHA


def test_a_digest_that_is_not_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        download("http://127.0.0.1:9/x", tmp_path / "x", "d41d8cd98f00b204e9800998ecf8427e")  # an MD5
