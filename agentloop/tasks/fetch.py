"""Published task data: found locally, or downloaded once into the user cache and checksum-verified.

A suite that names its published source (`url`, `sha256`, `filename` in the suite TOML) gets its
data file from the first of:

1. `--data FILE` (config `data`): handled by the caller, no lookup here;
2. `$AGENTLOOP_DATA_DIR/<filename>`: a folder of copies (CI points it at ../shared/data);
3. `<cache>/data/<filename>`, the cache being `$AGENTLOOP_CACHE` or ~/.cache/agentloop;
4. a download from `url` into that cache: streamed to a temporary file in the same folder,
   checked against `sha256`, then renamed into place, so a cut-off or wrong download leaves
   nothing behind.

Copies found in 2 and 3 are checked against `sha256` too. Every failure is a one-line DataError
that names the URL or file and says how to use a copy of your own (`--data`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO

import httpx

from agentloop.errors import DataError

DATA_DIR_ENV = "AGENTLOOP_DATA_DIR"
"""A folder holding data files by the suites' `filename`s; looked up before the cache."""
SHA256_RE = re.compile(r"[0-9a-f]{64}")
CONNECT_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


def data_cache_dir() -> Path:
    """Where downloaded data files are kept: `<cache_dir()>/data`."""
    from agentloop.verify import cache_dir  # lazy: verify imports much of the package

    return cache_dir() / "data"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _use_own_copy(filename: str) -> str:
    return f"pass --data FILE with your own copy, or set {DATA_DIR_ENV} to a folder holding {filename}"


def _check_copy(path: Path, url: str, sha256: str) -> Path:
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if actual != sha256:
        raise DataError(
            f"{path}: sha256 {actual} does not match the suite's {sha256} (published at {url}); "
            f"replace it with the published file, or pass --data {path} to use it as it is"
        )
    return path


def published_file(url: str, sha256: str, filename: str) -> Path:
    """The local path of the published file `filename` (from `url`, with checksum `sha256`):
    $AGENTLOOP_DATA_DIR, else the cache, else downloaded into the cache now."""
    if folder := os.environ.get(DATA_DIR_ENV):
        candidate = Path(folder) / filename
        if candidate.is_file():
            return _check_copy(candidate, url, sha256)
    cached = data_cache_dir() / filename
    if cached.is_file():
        if sha256_file(cached) == sha256:
            return cached
        # Only verified downloads are renamed into the cache, so this copy was damaged or replaced
        # after the fact: fetch it again rather than trust it.
        print(f"agentloop: {cached}: checksum mismatch, downloading it again", file=sys.stderr)
    return download(url, sha256, cached)


def download(url: str, sha256: str, dest: Path) -> Path:
    """Stream `url` into `dest` (via a temporary file in its folder), verify its sha256, rename.

    Any failure (offline, HTTP error, cut-off transfer, checksum mismatch, interrupt) removes the
    temporary file and leaves `dest` untouched; it is a one-line DataError naming the URL."""
    own_copy = _use_own_copy(dest.name)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(
            f"{dest.parent}: cannot write the data cache ({e.strerror or e}); set AGENTLOOP_CACHE to a "
            f"writable folder, or {own_copy}"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received, expected_bytes, actual = _stream(url, out, dest, own_copy)
        if expected_bytes is not None and received != expected_bytes:
            raise DataError(f"{url}: download cut off after {received} of {expected_bytes} bytes (Content-Length); "
                            f"nothing was kept; try again, or {own_copy}")
        if actual != sha256:
            raise DataError(
                f"{url}: sha256 mismatch (expected {sha256}, got {actual}, {received} bytes); "
                f"the download was discarded; {own_copy}"
            )
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write the data cache ({e.strerror or e}); {own_copy}") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"agentloop: saved {dest} (sha256 verified)", file=sys.stderr)
    return dest


def _stream(url: str, out: IO[bytes], dest: Path, own_copy: str) -> tuple[int, int | None, str]:
    """GET `url` into `out`: (bytes received on the wire, Content-Length or None, sha256 of the body)."""
    digest = hashlib.sha256()
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    expected: int | None = None
    response: httpx.Response | None = None
    try:
        # identity: the checksum is of the file as published, and Content-Length then counts it.
        with (
            httpx.Client(follow_redirects=True, timeout=timeout, headers={"Accept-Encoding": "identity"}) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DataError(f"{url}: HTTP {response.status_code} {response.reason_phrase}; "
                                f"cannot download the suite's data; {own_copy}")
            length = response.headers.get("content-length")
            identity = "content-encoding" not in response.headers
            expected = int(length) if length and length.isdigit() and identity else None
            size = f" ({expected / 1e6:.1f} MB)" if expected is not None else ""
            print(f"agentloop: downloading {url}{size} into {dest.parent} (first use)", file=sys.stderr)
            for chunk in response.iter_bytes(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            return response.num_bytes_downloaded, expected, digest.hexdigest()
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as e:
        if response is not None and response.status_code == 200:
            got = response.num_bytes_downloaded
            of = f"{got} of {expected}" if expected is not None else f"{got}"
            raise DataError(f"{url}: download cut off after {of} bytes ({_one_line(e)}); nothing was kept; "
                            f"try again, or {own_copy}") from None
        raise DataError(f"{url}: cannot download ({_one_line(e)}); offline? {own_copy}") from None
    except httpx.InvalidURL as e:
        raise DataError(f"{url}: invalid URL ({_one_line(e)}); fix the suite's 'url', or {own_copy}") from None
    except httpx.HTTPError as e:  # refused, DNS failure, connect timeout, TLS, too many redirects
        raise DataError(f"{url}: cannot download ({_one_line(e)}); offline? {own_copy}") from None
