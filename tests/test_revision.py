"""Revision chains (`loop.run_chain`) with the real sandbox and a scripted model that only fixes its
code once it has seen the feedback tests' failing assertion."""

from __future__ import annotations

import re

import anyio
import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.feedback import feedback_message
from agentloop.loop import Context, first_messages, run_chain, run_request
from agentloop.model.client import ModelClient
from agentloop.model.config import ModelConfig, SamplingParams
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.sandbox import DockerPool, SandboxConfig, Verdict
from agentloop.sandbox.types import Tests
from agentloop.strategy import Request
from agentloop.tasks.extract import assemble
from agentloop.tasks.suites import load_suite
from agentloop.verify import grade

pytestmark = pytest.mark.usefixtures("docker_ready")

SUITE, TASKS = load_suite("smoke")
SQUARE = next(t for t in TASKS if t.entry_point == "square")
WRONG = "```python\ndef square(x):\n    return x + x\n```"
RIGHT = "```python\ndef square(x):\n    return x * x\n```"
FEEDBACK_CLUE = "assert candidate(3) == 9"  # square's feedback test; its grading tests are more


def grading_only_lines(task) -> list[str]:
    feedback = set(task.feedback_tests.splitlines())
    return [line.strip() for line in task.grading_tests.splitlines() if line.strip().startswith("assert") and line not in feedback]


def learns_from_feedback(request: ScriptedRequest) -> ScriptedReply:
    """Wrong until the last user message carries the failing feedback assertion."""
    last = request.messages[-1]["content"]
    return ScriptedReply(texts=[RIGHT if FEEDBACK_CLUE in last else WRONG] * request.n)


def test_feedback_message_names_the_failing_test_and_is_capped():
    async def main():
        async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
            wrong = await grade(pool, SQUARE, "def square(x):\n    return x + x\n", 5, tests=SQUARE.feedback_tests)
            right = await grade(pool, SQUARE, "def square(x):\n    return x * x\n", 5, tests=SQUARE.feedback_tests)
            return wrong, right

    wrong, right = anyio.run(main)
    assert (wrong.verdict, right.verdict) == (Verdict.FAILED, Verdict.PASSED)
    message = feedback_message(wrong, 1200)
    assert f"Failing test: {FEEDBACK_CLUE}" in message and "AssertionError" in message
    assert len(feedback_message(wrong, 80)) <= 80
    assert feedback_message(right) == "Your code passes the example tests."
    assert not any(line in message for line in grading_only_lines(SQUARE))


def test_revision_beats_parallel_at_equal_generations_and_never_leaks_grading_tests():
    requests: list[ScriptedRequest] = []

    def script(request: ScriptedRequest) -> ScriptedReply:
        requests.append(request)
        return learns_from_feedback(request)

    attempts: list[Attempt] = []

    async def record(a: Attempt) -> None:
        attempts.append(a)

    async def main(base_url: str) -> None:
        cfg = ModelConfig(base_url=base_url, model="scripted", max_retries=0)
        async with ModelClient(cfg, SamplingParams(max_tokens=64)) as client, \
                DockerPool.start(SandboxConfig(pool_size=2)) as pool:
            limits = {SQUARE.id: 5.0}
            revision = Context(client, pool, SUITE, limits, record, "revision-1x2")
            parallel = Context(client, pool, SUITE, limits, record, "parallel-2")
            await run_chain(revision, SQUARE, 0, first_messages(SUITE, SQUARE), turns=2)
            await run_request(parallel, Request(SQUARE, (0, 1), 0, None), first_messages(SUITE, SQUARE))

    with scripted_server_in_thread(script) as server:
        anyio.run(main, server.base_url)

    by_strategy = {s: [a for a in attempts if a.strategy == s] for s in ("revision-1x2", "parallel-2")}
    revision, parallel = by_strategy["revision-1x2"], by_strategy["parallel-2"]
    assert [(a.turn, a.verdict, a.feedback_verdict) for a in revision] == [
        (0, Verdict.FAILED, Verdict.FAILED), (1, Verdict.PASSED, Verdict.PASSED)]
    assert [a.verdict for a in parallel] == [Verdict.FAILED, Verdict.FAILED]
    assert all(a.kind is AttemptKind.COMPLETED for a in attempts)
    # The second turn extends the first turn's messages unchanged (prefix caching), then adds the
    # model's reply and the feedback built from the feedback tests.
    first, second = revision[0].messages, revision[1].messages
    assert second[: len(first)] == first and second[len(first)]["content"] == WRONG
    assert FEEDBACK_CLUE in second[-1]["content"]
    # No grading-test text ever reaches a prompt.
    leaked = [line for r in requests for m in r.messages for line in grading_only_lines(SQUARE) if line in m["content"]]
    assert leaked == []
    assert re.search(r"candidate\(-4\)|candidate\(12\)", SQUARE.grading_tests)  # the scan can fail


SNOOP = '''
import gc, sys

def square(x):
    return x + x

MARKER = "assert snoop_marker_is_visible"  # proves the scan below finds strings it can reach
found = set()

def look(value, depth=0):  # gc.get_objects() lists every container: two levels are enough
    if depth > 2:
        return
    if isinstance(value, str) and "assert" in value:
        found.add(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            if isinstance(v, str) and "assert" in v:
                found.add(v)
    elif isinstance(value, dict):
        for k, v in list(value.items()):
            look(k, depth + 1)
            look(v, depth + 1)
    elif type(value).__name__ == "code":
        look(value.co_consts, depth + 1)

frame = sys._getframe()
while frame is not None:
    look(dict(frame.f_locals))
    look(dict(frame.f_globals))
    frame = frame.f_back
for obj in gc.get_objects():
    look(obj)
sys.stderr.write("\\n".join(sorted(found)))
'''


def test_a_candidate_that_snoops_its_memory_finds_no_grading_test_to_echo_into_feedback():
    """Feedback output reaches the next prompt, so the candidate's process must not hold the
    grading tests (of this job, of earlier jobs in the same warm container, or their output)."""
    async def main():
        async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:  # one container: every job shares it
            graded = await grade(pool, SQUARE, SNOOP, 5)
            checked = await grade(pool, SQUARE, SNOOP, 5, tests=SQUARE.feedback_tests)
            return graded, checked

    graded, checked = anyio.run(main)
    assert (graded.verdict, checked.verdict) == (Verdict.FAILED, Verdict.FAILED)
    assert "snoop_marker_is_visible" in checked.stderr  # the scan works
    leaked = [line for line in grading_only_lines(SQUARE) if line in checked.stderr + checked.stdout]
    assert leaked == []


def test_grading_and_feedback_in_one_job_leak_no_grading_test_into_feedback():
    """A run grades and checks an attempt in one job (grading first, then the feedback tests
    against a fresh fork): the feedback suite's candidate holds none of the grading tests."""
    async def main():
        async with DockerPool.start(SandboxConfig(pool_size=1)) as pool:
            return await pool.run_suites(assemble(SQUARE, SNOOP), [Tests(SQUARE.grading_tests, "square"),
                                                                   Tests(SQUARE.feedback_tests, "square")], 5)

    graded, checked = anyio.run(main)
    assert (graded.verdict, checked.verdict) == (Verdict.FAILED, Verdict.FAILED)
    assert "snoop_marker_is_visible" in checked.stderr
    leaked = [line for line in grading_only_lines(SQUARE) if line in checked.stderr + checked.stdout]
    assert leaked == []
