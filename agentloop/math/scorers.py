"""Scorers for math solutions without ground truth: self-verification and reward models.

A scorer maps (problem, solution) to a score in [0, 1] (higher: more likely correct), used by
weighted voting and best-of-N (`agentloop.math.vote`). Three kinds:

- ``none``: no score (the scorer returns None; votes count it as 0).
- ``self``: ask the policy model itself "Is the solution correct? Answer with Yes or No." with one
  greedy token and its top logprobs; the score is P(Yes) / (P(Yes) + P(No)). Works on any vLLM
  server, the CPU one included (chat completions return logprobs).
- ``reward``: a reward model served by vLLM's pooling runner, e.g. a process reward model (PRM)::

      vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling --trust-remote-code --port 8001

  The solution is split into steps (blank lines by default), each step is followed by the PRM's
  step tag (``<extra_0>`` for Qwen2.5-Math-PRM: vLLM's default ``step_tag_id`` 151651 for that
  architecture; other PRMs need ``--pooler-config '{"step_tag_id": ...}'``) and the chat is sent
  to ``POST /pooling`` (``{"model", "messages"}``, or ``{"model", "input"}`` with ``chat=False``).
  vLLM answers ``{"data": [{"index": 0, "object": "pooling", "data": [[p_bad, p_good], ...]}]}``,
  one row per step tag (or per token when no step tag is set); the step score is each row's last
  column. An outcome reward model (sequence classifier) answers one flat list of class
  probabilities (its last class is "good"; a one-label model's value is its score); ``/classify``
  (``endpoint="classify"``) answers ``{"data": [{"probs": [...]}]}`` and is read the same way.
  Step scores are aggregated with ``last`` (the default, as in Hugging Face's "Scaling test-time
  compute with open models"), ``min`` or ``prod``.

Errors (HTTP, timeouts, a malformed body, missing logprobs) raise `InfraError` with a one-line
message, never a made-up score. Retries are deliberately simple: `ScorerConfig.retries` more tries
(default 1) for connection errors, timeouts, 429 and 5xx, after a jittered wait of up to 1 s
(tenacity, like `ModelClient`); anything else fails at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random

from agentloop.errors import ConfigError, InfraError

KINDS = ("none", "self", "reward")
AGGREGATES = ("last", "min", "prod")
ENDPOINTS = ("pooling", "classify")

VERIFY_TEMPLATE = (
    "Problem:\n{problem}\n\nProposed solution:\n{solution}\n\n"
    "Is the solution correct? Answer with Yes or No."
)
PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt of Qwen2.5-Math-PRM's model card."""

_MAX_MESSAGE_CHARS = 300

ScoreFn = Callable[[str, str], Awaitable[float | None]]


@dataclass(frozen=True)
class ScorerConfig:
    """Which scorer to use and where it is served."""

    kind: str = "none"
    """"none" (no scores), "self" (the policy model judges its own solution) or "reward" (a reward
    model behind vLLM's pooling endpoint)."""
    base_url: str | None = None
    """Server URL (like the model's, e.g. http://127.0.0.1:8001/v1; /pooling is served at the
    root, so a trailing /v1 is dropped for it). None: the policy model's server (kind "self")."""
    model: str | None = None
    """Model name on that server. None: the policy model (kind "self"); required for "reward"."""
    api_key: str = "EMPTY"
    """Bearer token for the server (vLLM's --api-key); "EMPTY" for none."""
    aggregate: str = "last"
    """How per-step (process) scores become one: "last" (default, as in Hugging Face's study),
    "min" or "prod". A single score is returned as it is by all three."""
    timeout_s: float = 60.0
    """Per HTTP request."""
    retries: int = 1
    """Extra tries after a connection error, timeout, 429 or 5xx (0: none)."""
    endpoint: str = "pooling"
    """Reward models: "pooling" (POST /pooling; step or token scores) or "classify" (POST /classify)."""
    chat: bool = True
    """Reward models: send chat `messages` (the server applies the model's chat template, as the
    PRM model cards do) rather than one raw `input` string."""
    system_prompt: str = PRM_SYSTEM_PROMPT
    """Reward models: the system message of the chat sent to the reward model ("" for none)."""
    step_separator: str = "\n\n"
    """Reward models: how the solution is split into steps."""
    step_tag: str = "<extra_0>"
    """Reward models: the text appended after each step, whose token the PRM scores ("" for none)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"scorer.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"scorer.aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(f"scorer.endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}")
        if self.kind == "reward" and not (self.base_url and self.model):
            raise ConfigError("scorer.kind = 'reward' needs scorer.base_url and scorer.model")
        if self.timeout_s <= 0 or self.retries < 0:
            raise ConfigError("scorer.timeout_s must be > 0 and scorer.retries >= 0")


class _TransientError(InfraError):
    """An InfraError that a retry may fix (connection error, timeout, 429, 5xx)."""


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_MESSAGE_CHARS else line[: _MAX_MESSAGE_CHARS - 3] + "..."


def _transient_status(status: int) -> bool:
    return status == 429 or status >= 500


# --- self-verification -------------------------------------------------------------------------


def p_yes(top_logprobs: list[tuple[str, float]]) -> float:
    """P(Yes) / (P(Yes) + P(No)) over tokens that read yes/no after strip+lower; 0.5 if neither."""
    yes = sum(math.exp(lp) for tok, lp in top_logprobs if tok.strip().lower() == "yes")
    no = sum(math.exp(lp) for tok, lp in top_logprobs if tok.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else 0.5


async def self_verify(client: openai.AsyncOpenAI, model: str, problem: str, solution: str) -> float:
    """Ask `model` whether `solution` solves `problem`; the probability it answers Yes (see p_yes).

    One greedy token with its top 10 logprobs. Raises InfraError on any failure.
    """
    messages = [{"role": "user", "content": VERIFY_TEMPLATE.format(problem=problem, solution=solution)}]
    url = str(client.base_url)
    try:
        response = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=10  # type: ignore[arg-type]
        )
    except openai.APIStatusError as e:
        cls = _TransientError if _transient_status(e.status_code) else InfraError
        raise cls(f"self-verification request to {url} failed: HTTP {e.status_code}: {_one_line(e.message)}") from e
    except openai.APIConnectionError as e:  # includes timeouts
        cause = e.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause else e.message
        raise _TransientError(f"self-verification request to {url} failed: {_one_line(why)}") from e
    except openai.APIError as e:
        raise InfraError(f"self-verification request to {url} failed: {_one_line(e.message)}") from e
    try:
        first = response.choices[0].logprobs.content[0]  # type: ignore[union-attr,index]
        pairs = [(t.token, float(t.logprob)) for t in first.top_logprobs] or [(first.token, float(first.logprob))]
    except (AttributeError, IndexError, TypeError, ValueError) as e:
        raise InfraError(f"self-verification reply from {url} has no logprobs ({type(e).__name__}); "
                         "the server must support logprobs on chat completions") from e
    return p_yes(pairs)


# --- reward models ----------------------------------------------------------------------------


def pooling_root(base_url: str) -> str:
    """vLLM serves /pooling and /classify at the root, not under /v1."""
    root = base_url.rstrip("/")
    return root[:-3] if root.endswith("/v1") else root


def step_scores(output: Any) -> list[float]:
    """Scores from one pooling/classify output: a row per step or token -> each row's last value
    (the "good" class of a two-label PRM); a flat list of class probabilities -> its last value."""
    if not isinstance(output, list) or not output:
        raise ValueError(f"expected a non-empty list of scores, got {output!r:.80}")
    if all(isinstance(row, list) for row in output):
        values = [row[-1] if row else None for row in output]
    else:
        values = [output[-1]]
    scores = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"not a finite number: {v!r:.40}")
        scores.append(float(v))
    return scores


def aggregate_scores(scores: list[float], how: str) -> float:
    """One score from per-step scores: "last", "min" or "prod"."""
    if not scores:
        raise ValueError("no step scores")
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    raise ValueError(f"unknown aggregate {how!r}")


def reward_request(model: str, problem: str, solution: str, *, chat: bool = True,
                   system_prompt: str = PRM_SYSTEM_PROMPT, step_separator: str = "\n\n",
                   step_tag: str = "<extra_0>") -> dict[str, Any]:
    """The JSON body for /pooling or /classify: steps joined by (and ended with) the step tag."""
    steps = [s.strip() for s in solution.split(step_separator) if s.strip()] if step_separator else []
    response = step_tag.join(steps or [solution.strip()]) + step_tag
    if not chat:
        return {"model": model, "input": f"{problem}\n\n{response}"}
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": "user", "content": problem}, {"role": "assistant", "content": response}]
    return {"model": model, "messages": messages}


async def reward_score(http: httpx.AsyncClient, base_url: str, model: str, problem: str, solution: str,
                       aggregate: str = "last", *, endpoint: str = "pooling", chat: bool = True,
                       system_prompt: str = PRM_SYSTEM_PROMPT, step_separator: str = "\n\n",
                       step_tag: str = "<extra_0>") -> float:
    """Score `solution` with a reward model behind vLLM's /pooling (or /classify) endpoint.

    Raises InfraError for HTTP errors, timeouts and malformed bodies.
    """
    url = f"{pooling_root(base_url)}/{endpoint}"
    body = reward_request(model, problem, solution, chat=chat, system_prompt=system_prompt,
                          step_separator=step_separator, step_tag=step_tag)
    try:
        response = await http.post(url, json=body)
    except httpx.TimeoutException as e:
        raise _TransientError(f"reward request to {url} failed: timed out ({type(e).__name__})") from e
    except httpx.HTTPError as e:
        raise _TransientError(f"reward request to {url} failed: {type(e).__name__}: {_one_line(e)}") from e
    if response.status_code != 200:
        cls = _TransientError if _transient_status(response.status_code) else InfraError
        raise cls(f"reward request to {url} failed: HTTP {response.status_code}: {_error_message(response)}")
    try:
        item = response.json()["data"][0]
        output = item["data"] if endpoint == "pooling" else item["probs"]
        return aggregate_scores(step_scores(output), aggregate)
    except (ValueError, KeyError, IndexError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise InfraError(f"reward reply from {url} is malformed: {type(e).__name__}: {_one_line(e)}") from e


def _error_message(response: httpx.Response) -> str:
    """vLLM's {"error": {"message": ...}} (or {"message": ...}), else the start of the body."""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]
        if isinstance(body, dict) and body.get("message"):
            return _one_line(body["message"])
    except ValueError:
        pass
    return _one_line(response.text[:200]) or response.reason_phrase


# --- the configured scorer -----------------------------------------------------------------------


class Scorer:
    """`await scorer(problem, solution)` -> float in [0, 1], or None for kind "none".

    Owns its HTTP clients: use as `async with make_scorer(cfg, base_url=..., model=...) as score:`.
    """

    def __init__(self, cfg: ScorerConfig, base_url: str | None = None, model: str | None = None) -> None:
        self.cfg = cfg
        self.base_url = cfg.base_url or base_url
        self.model = cfg.model or model
        self._openai: openai.AsyncOpenAI | None = None
        self._http: httpx.AsyncClient | None = None
        if cfg.kind == "self":
            if not (self.base_url and self.model):
                raise ConfigError("scorer.kind = 'self' needs a base_url and model (the policy model's by default)")
            self._openai = openai.AsyncOpenAI(base_url=self.base_url, api_key=cfg.api_key, max_retries=0,
                                              timeout=cfg.timeout_s)
        elif cfg.kind == "reward":
            headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key != "EMPTY" else {}
            self._http = httpx.AsyncClient(timeout=cfg.timeout_s, headers=headers)

    async def __aenter__(self) -> Scorer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._openai is not None:
            await self._openai.close()
        if self._http is not None:
            await self._http.aclose()

    async def __call__(self, problem: str, solution: str) -> float | None:
        if self.cfg.kind == "none":
            return None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.cfg.retries),
            wait=wait_random(0, 1),
            retry=retry_if_exception(lambda e: isinstance(e, _TransientError)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(problem, solution)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _once(self, problem: str, solution: str) -> float:
        cfg = self.cfg
        if self._openai is not None:
            return await self_verify(self._openai, str(self.model), problem, solution)
        assert self._http is not None and self.base_url and self.model
        return await reward_score(self._http, self.base_url, self.model, problem, solution, cfg.aggregate,
                                  endpoint=cfg.endpoint, chat=cfg.chat, system_prompt=cfg.system_prompt,
                                  step_separator=cfg.step_separator, step_tag=cfg.step_tag)


def make_scorer(cfg: ScorerConfig, *, base_url: str | None = None, model: str | None = None) -> Scorer:
    """The scorer `cfg` describes; `base_url` and `model` (the policy model's) fill in what `cfg`
    leaves None. An async context manager (it owns HTTP clients) and a ScoreFn."""
    return Scorer(cfg, base_url=base_url, model=model)
