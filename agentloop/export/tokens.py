"""Token counts of export records: the run's own tokenizer when it is on this machine (chat
template applied, so the count is what a trainer sees), else the server's usage numbers.

Nothing is downloaded: a tokenizer is looked for in a local model folder, in `agentloop serve`'s
converted default model, and in the Hugging Face cache (`local_files_only`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentloop.errors import ConfigError
from agentloop.export.records import Messages
from agentloop.export.source import Row, RunSource

USAGE = "usage"


def _candidate(model: str) -> str | None:
    """Where `model`'s tokenizer would be on this machine, if anywhere (checked before importing
    transformers, which takes seconds)."""
    from agentloop.serve import DEFAULT_MODEL_DIR, DEFAULT_SERVED_NAME, ServeConfig

    if model and Path(model).is_dir():
        return model
    served = ServeConfig().cache_dir / DEFAULT_MODEL_DIR
    if model == DEFAULT_SERVED_NAME and (served / "tokenizer.json").is_file():
        return str(served)
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub")
    if "/" in model and (hub / f"models--{model.replace('/', '--')}").is_dir():
        return model
    return None


def _load(name: str) -> Any:
    from transformers import AutoTokenizer  # optional: installed with vLLM

    return AutoTokenizer.from_pretrained(name, local_files_only=True)


class TokenCounter:
    """Per run: a tokenizer (by model) or None, meaning the stored usage numbers."""

    def __init__(self, sources: list[RunSource], tokenizer: str | None):
        self._by_run: dict[int, Any] = {}
        self.sources: dict[str, str] = {}
        """run id → what its counts come from: `tokenizer:NAME` or `usage`."""
        loaded: dict[str, Any] = {}
        for s in sources:
            name = None if tokenizer == USAGE else (tokenizer or _candidate(s.model))
            if name is not None and name not in loaded:
                try:
                    loaded[name] = _load(name)
                except Exception as e:  # noqa: BLE001 - any loading failure means "not available"
                    if tokenizer:
                        first = str(e).splitlines()[0] if str(e) else ""
                        raise ConfigError(f"--tokenizer {tokenizer}: cannot load a tokenizer from it locally "
                                          f"({type(e).__name__}: {first:.160})") from None
                    loaded[name] = None
            tok = loaded.get(name) if name else None
            self._by_run[s.index] = tok
            self.sources[s.run_id] = f"tokenizer:{name}" if tok is not None else USAGE

    def count(self, run: int, prompt: Messages, replies: list[Row], usage_prompt: int | None) -> tuple[int, int]:
        """(prompt tokens, reply tokens summed over `replies`) of one record."""
        tok = self._by_run.get(run)
        if tok is None:
            return usage_prompt or 0, sum(r.completion_tokens or 0 for r in replies)
        n_prompt = _length(tok, prompt, generation_prompt=True)
        return n_prompt, sum(_length(tok, [*prompt, {"role": "assistant", "content": r.completion or ""}]) - n_prompt
                             for r in replies)


    def count_transcript(self, run: int, transcript: Messages, steps: Sequence[Row],
                         tools: list[dict[str, Any]] | None) -> tuple[int, int]:
        """(prompt tokens, reply tokens) of an agent episode's transcript: the task prompt (step 0's),
        and everything after it (replies and observations with a tokenizer; the server's completion
        tokens of every step with `usage`)."""
        tok = self._by_run.get(run)
        if tok is None:
            return steps[0].prompt_tokens or 0, sum(r.completion_tokens or 0 for r in steps)
        users = [i for i, m in enumerate(transcript) if m.get("role") == "user"]
        prompt = transcript[: users[0] + 1] if users else transcript[:1]
        n_prompt = _length(tok, prompt, generation_prompt=True, tools=tools)
        return n_prompt, max(0, _length(tok, transcript, tools=tools) - n_prompt)


def _length(tok: Any, messages: Messages, generation_prompt: bool = False,
            tools: list[dict[str, Any]] | None = None) -> int:
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                      **({"tools": tools} if tools else {}))
        return len(ids if isinstance(ids, list) else ids["input_ids"])
    return len(tok("".join(m.get("content") or "" for m in messages))["input_ids"])
