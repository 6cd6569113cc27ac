"""Published suite data: --data > $AGENTLOOP_DATA_DIR > the user cache > a verified download on
first use, against a local HTTP server (no Docker, no internet). Every failure is one line and
leaves nothing behind: no cached file, no temporary file, no run dir."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agentloop.cli import main
from agentloop.errors import ConfigError, DataError
from agentloop.tasks.fetch import DATA_DIR_ENV, SHA256_RE, sha256_file
from agentloop.tasks.suites import data_filename, load_suite, load_suite_definition, suites_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BODY = "".join(json.dumps({"id": f"p/{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)).encode()
SHA = hashlib.sha256(BODY).hexdigest()
OTHER_SHA = hashlib.sha256(b"something else").hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """/good: BODY; /cut: BODY with a Content-Length 1000 bytes larger, then the connection closes;
    anything else: 404. Every request is recorded in server.hits."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if path not in ("/good.jsonl", "/cut.jsonl"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY) + (1000 if path == "/cut.jsonl" else 0)))
        self.end_headers()
        self.wfile.write(BODY)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested so far) of a local HTTP server on a free port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.hits  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def dead_url(name: str = "gone.jsonl") -> str:
    """A URL on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, no data dir (conftest points it at the shared copies), no proxies."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("AGENTLOOP_CACHE", str(cache))
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return cache


def cache_files(cache: Path) -> list[str]:
    """Everything under the cache folder (temporary files included)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def suite_toml(tmp_path: Path, url: str, sha256: str = SHA, extra: str = "", name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'format = "math_jsonl"\nurl = "{url}"\nsha256 = "{sha256}"\nfilename = "tiny.jsonl"\n{extra}')
    return path


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# --- download on first use -------------------------------------------------------------------

def test_download_is_verified_cached_and_reused(tmp_path, isolated, server, capsys):
    base, hits = server
    suite = suite_toml(tmp_path, f"{base}/good.jsonl")
    _, tasks = load_suite(str(suite))
    assert [t.answer for t in tasks] == ["1", "2", "3"]
    assert cache_files(isolated) == ["data/tiny.jsonl"]
    assert sha256_file(isolated / "data" / "tiny.jsonl") == SHA
    assert hits == ["/good.jsonl"]
    assert "downloading" in capsys.readouterr().err
    assert load_suite(str(suite))[1] == tasks
    assert hits == ["/good.jsonl"], "the second load must read the cache"


def test_checksum_mismatch_keeps_nothing(tmp_path, isolated, server):
    base, hits = server
    url = f"{base}/good.jsonl"
    with pytest.raises(DataError) as e:
        load_suite(str(suite_toml(tmp_path, url, OTHER_SHA)))
    message = one_line(e)
    assert message.startswith(f"{url}: sha256 mismatch (expected {OTHER_SHA}, got {SHA}"), message
    assert "--data" in message
    assert hits == ["/good.jsonl"]
    assert cache_files(isolated) == []


def test_cut_off_transfer_keeps_nothing(tmp_path, isolated, server):
    base, _ = server
    url = f"{base}/cut.jsonl"
    with pytest.raises(DataError) as e:
        load_suite(str(suite_toml(tmp_path, url)))
    message = one_line(e)
    assert message.startswith(f"{url}: download cut off after {len(BODY)} of {len(BODY) + 1000} bytes"), message
    assert "--data" in message
    assert cache_files(isolated) == []


def test_http_error_names_status_and_url(tmp_path, isolated, server):
    base, _ = server
    url = f"{base}/missing.jsonl"
    with pytest.raises(DataError) as e:
        load_suite(str(suite_toml(tmp_path, url)))
    assert one_line(e).startswith(f"{url}: HTTP 404 ")
    assert cache_files(isolated) == []


def test_no_server_names_url_and_data_flag(tmp_path, isolated):
    url = dead_url()
    with pytest.raises(DataError) as e:
        load_suite(str(suite_toml(tmp_path, url)))
    message = one_line(e)
    assert message.startswith(f"{url}: cannot download ("), message
    assert "--data" in message and DATA_DIR_ENV in message and "tiny.jsonl" in message
    assert cache_files(isolated) == []


def test_damaged_cache_copy_is_downloaded_again(tmp_path, isolated, server):
    base, hits = server
    (isolated / "data").mkdir(parents=True)
    (isolated / "data" / "tiny.jsonl").write_bytes(BODY[:-10])
    assert len(load_suite(str(suite_toml(tmp_path, f"{base}/good.jsonl")))[1]) == 3
    assert hits == ["/good.jsonl"]
    assert sha256_file(isolated / "data" / "tiny.jsonl") == SHA


# --- what comes before the download: --data, the data dir, the cache -------------------------

def test_data_flag_overrides_the_url(tmp_path, isolated, server):
    base, hits = server
    own = tmp_path / "mine.jsonl"
    own.write_bytes(BODY.replace(b'"1"', b'"one"'))  # a different file: --data is used as it is
    _, tasks = load_suite(str(suite_toml(tmp_path, f"{base}/good.jsonl")), data=str(own))
    assert tasks[0].answer == "one"
    assert hits == [] and cache_files(isolated) == []


def test_data_dir_overrides_the_download(tmp_path, isolated, server, monkeypatch):
    base, hits = server
    folder = tmp_path / "data-dir"
    folder.mkdir()
    (folder / "tiny.jsonl").write_bytes(BODY)
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    assert len(load_suite(str(suite_toml(tmp_path, f"{base}/good.jsonl")))[1]) == 3
    assert hits == [] and cache_files(isolated) == []


def test_data_dir_copy_must_match_the_checksum(tmp_path, isolated, server, monkeypatch):
    base, hits = server
    folder = tmp_path / "data-dir"
    folder.mkdir()
    (folder / "tiny.jsonl").write_bytes(BODY + b"\n")
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    with pytest.raises(DataError) as e:
        load_suite(str(suite_toml(tmp_path, f"{base}/good.jsonl")))
    message = one_line(e)
    assert message.startswith(f"{folder / 'tiny.jsonl'}: sha256 ") and SHA in message and "--data" in message
    assert hits == []


def test_data_dir_without_the_file_falls_back_to_the_cache(tmp_path, isolated, server, monkeypatch):
    base, hits = server
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    assert len(load_suite(str(suite_toml(tmp_path, f"{base}/good.jsonl")))[1]) == 3
    assert hits == ["/good.jsonl"] and cache_files(isolated) == ["data/tiny.jsonl"]
    assert list((tmp_path / "empty").iterdir()) == []


def test_filename_defaults_to_the_urls_last_segment(tmp_path, isolated, server):
    base, _ = server
    suite = tmp_path / "s.toml"
    suite.write_text(f'format = "math_jsonl"\nurl = "{base}/good.jsonl?x=1"\nsha256 = "{SHA.upper()}"\n')
    assert data_filename(load_suite_definition(str(suite))[0]) == "good.jsonl"
    assert len(load_suite(str(suite))[1]) == 3
    assert cache_files(isolated) == ["data/good.jsonl"]


@pytest.mark.parametrize("keys, expected", [
    ('url = "https://x.org/a.jsonl"\n', "'url' needs 'sha256'"),
    (f'url = "https://x.org/a.jsonl"\nsha256 = "{SHA[:-1]}"\n', "'sha256' = '"),
    (f'url = "ftp://x.org/a.jsonl"\nsha256 = "{SHA}"\n', "'url' = 'ftp://x.org/a.jsonl' must be an http(s) URL"),
    (f'url = "https://x.org/a.jsonl"\nsha256 = "{SHA}"\npath = "a.jsonl"\n', "give either 'path' (a local file) or 'url'"),
    (f'url = "https://x.org/a.jsonl"\nsha256 = "{SHA}"\nfilename = "../a.jsonl"\n', "'filename' = '../a.jsonl' must be a plain file name"),
    (f'url = "https://x.org/"\nsha256 = "{SHA}"\n', "the URL's last path segment '' must be a plain file name"),
    (f'path = "a.jsonl"\nsha256 = "{SHA}"\n', "'sha256' is only used with 'url'"),
    ('path = "a.jsonl"\nfilename = "a.jsonl"\n', "'filename' is only used with 'url'"),
])
def test_bad_source_keys_are_one_line_config_errors(tmp_path, keys, expected):
    suite = tmp_path / "s.toml"
    suite.write_text('format = "math_jsonl"\n' + keys)
    with pytest.raises(ConfigError) as e:
        load_suite_definition(str(suite))
    assert one_line(e).startswith(f"{suite}: {expected}"), str(e.value)


# --- the CLI: one line, exit 2, no run dir ----------------------------------------------------

def test_cli_offline_is_one_line_and_leaves_no_run_dir(tmp_path, isolated):
    """A real `agentloop run` process: empty data dir, empty cache, nothing listening at the URL."""
    url = dead_url("test.jsonl")
    suite = suite_toml(tmp_path, url, name="math500")
    (tmp_path / "empty").mkdir()
    env = {**os.environ, DATA_DIR_ENV: str(tmp_path / "empty"), "AGENTLOOP_CACHE": str(isolated)}
    proc = subprocess.run([sys.executable, "-m", "agentloop.cli", "run", "--suite", str(suite), "--runs-dir", str(tmp_path / "runs")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agentloop: error: {url}: cannot download ("), proc.stderr
    assert "--data" in lines[0]
    assert not (tmp_path / "runs").exists()
    assert cache_files(isolated) == [] and list((tmp_path / "empty").iterdir()) == []


def test_cli_shipped_suite_without_a_copy_asks_for_data(tmp_path, isolated, monkeypatch, capsys):
    """`agentloop run --suite math500` with no copy anywhere and no network: the request goes to the
    suite's published URL (answered here by a transport that refuses), then one line, exit 2."""
    requested: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr(httpx, "Client", functools.partial(httpx.Client, transport=httpx.MockTransport(refuse)))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    suite, _ = load_suite_definition("math500")
    assert main(["run", "--suite", "math500", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"agentloop: error: {suite.url}: cannot download ([Errno 111] Connection refused); offline? "
                   f"pass --data FILE with your own copy, or set {DATA_DIR_ENV} to a folder holding math500.jsonl"]
    assert requested == [suite.url]
    assert not (tmp_path / "runs").exists() and cache_files(isolated) == []


# --- the shipped suites -----------------------------------------------------------------------

def test_shipped_suites_name_a_checksummed_source():
    """Every shipped suite with a url has a sha256 and a file name; the shared copy, when present,
    is that file. The suites that read published data all have a url."""
    with_url = {}
    for path in sorted(suites_dir().glob("*.toml")):
        suite, _ = load_suite_definition(str(path))
        if suite.url is None:
            continue
        assert suite.url.startswith("https://") and suite.path is None, path
        assert suite.sha256 is not None and SHA256_RE.fullmatch(suite.sha256), path
        with_url[path.stem] = data_filename(suite)
        shared = SHARED / data_filename(suite)
        if shared.is_file():
            assert sha256_file(shared) == suite.sha256, f"{shared} does not match {path}"
    assert {"humanevalplus", "math500", "gsm8k"} <= set(with_url)
    assert with_url["humanevalplus"] == "humanevalplus-v0.1.10.jsonl.gz"
    assert with_url["math500"] == "math500.jsonl" and with_url["gsm8k"] == "gsm8k-test.jsonl"
