"""Correctness of the whole grading path: every HumanEval+ reference solution passes its full
tests in the sandbox (HumanEval/32, broken upstream in this format, is graded as evalplus does),
and subtly wrong solutions fail."""

from __future__ import annotations

import anyio
import pytest

from agentloop.sandbox import DockerPool, SandboxConfig, Verdict
from agentloop.tasks.suites import load_suite
from agentloop.verify import grade

pytestmark = pytest.mark.usefixtures("docker_ready")

SUBTLY_WRONG = {
    # `<=` instead of `<`: only differs when two numbers are exactly `threshold` apart
    "HumanEval/0": ("< threshold", "<= threshold"),
    # off by one at the end of the range
    "HumanEval/55": ("for _ in range(3, n + 1):", "for _ in range(3, n):"),
    # returns the last of several longest strings instead of the first
    "HumanEval/12": ("    for s in strings:", "    for s in reversed(strings):"),
    # [5] for an empty list: np.allclose([5], []) broadcasts to True, so the upstream OriginFmt
    # `assertion` passes it; evalplus's evaluator (and agentloop's loader) check type and length first
    "HumanEval/26": ("    num_cnt = dict()\n", "    if not numbers:\n        return [5]\n    num_cnt = dict()\n"),
}


def test_every_reference_passes_and_subtly_wrong_fails():
    _, tasks = load_suite("humanevalplus")
    by_id = {t.id: t for t in tasks}
    results = {}

    async def main():
        async with DockerPool.start(SandboxConfig(pool_size=2)) as pool:
            async def one(key, task, body):
                results[key] = await grade(pool, task, body, time_limit_s=60)

            async with anyio.create_task_group() as tg:
                for task in tasks:
                    tg.start_soon(one, task.id, task, task.reference)
                for task_id, (old, new) in SUBTLY_WRONG.items():
                    body = by_id[task_id].reference
                    assert old in body, task_id
                    tg.start_soon(one, ("wrong", task_id), by_id[task_id], body.replace(old, new))

    anyio.run(main)
    not_passed = {k: (r.verdict.value, r.detail) for k, r in results.items()
                  if not isinstance(k, tuple) and r.verdict is not Verdict.PASSED}
    assert not_passed == {}
    for task_id in SUBTLY_WRONG:
        assert results[("wrong", task_id)].verdict is Verdict.FAILED, task_id
