"""Export records in the shapes trainers read: TRL's conversational `messages` (SFTTrainer) and
`prompt`/`chosen`/`rejected` (DPOTrainer), and OpenAI's chat and preference fine-tuning JSONL.

Records carry prompts, replies and feedback-test messages only. Grading tests, their output and
their verdict details never enter a record: provenance holds verdict names, not test text.
"""

from __future__ import annotations

from typing import Any

from agentloop.export.source import Row, RunSource

Messages = list[dict[str, Any]]


def assistant(row: Row) -> dict[str, Any]:
    return {"role": "assistant", "content": row.completion or ""}


def final_messages(source: RunSource, row: Row) -> Messages:
    """Task prompt → the verified reply (whatever turn produced it)."""
    return [*source.prompt(row), assistant(row)]


def trajectory_messages(source: RunSource, row: Row) -> Messages:
    """The whole chain: every earlier reply and the feedback it got, ending in the verified reply."""
    stored = source.store.messages(row.messages_hash)
    return [*(stored or source.prompt(row)), assistant(row)]


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def attempt_meta(source: RunSource, row: Row) -> dict[str, Any]:
    """Provenance of one attempt. Every key is always present with one type, so the JSONL loads as
    one Arrow schema across runs."""
    extra = row.extra_json()
    s = source.sampling
    return {
        "run": source.run_id, "run_dir": str(source.run_dir), "model": source.model, "suite": source.suite.name,
        "task_id": row.task_id, "strategy": row.strategy, "chain": row.chain, "turn": row.turn, "attempt": row.id,
        "sampling": {"temperature": _float(s.get("temperature")), "top_p": _float(s.get("top_p")),
                     "max_tokens": _int(s.get("max_tokens")), "seed": _int(extra.get("seed"))},
        "tokens": {"prompt": _int(row.prompt_tokens), "cached_prompt": _int(row.cached_prompt_tokens),
                   "completion": _int(row.completion_tokens)},
        "verdicts": {"grading": row.verdict, "feedback": row.feedback_verdict},
        "finish_reason": extra.get("finish_reason") if isinstance(extra.get("finish_reason"), str) else None,
    }


def sft_record(fmt: str, messages: Messages, meta: dict[str, Any]) -> dict[str, Any]:
    """TRL: `messages` + `metadata`. OpenAI: `messages` only (extra keys are rejected; the
    metadata goes to a sidecar file), and only the last reply is trained on (`weight` 0 on the
    failed replies of a trajectory)."""
    if fmt == "openai":
        replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if len(replies) > 1:
            messages = [{**m, "weight": int(i == replies[-1])} if i in replies else m for i, m in enumerate(messages)]
        return {"messages": messages}
    return {"messages": messages, "metadata": meta}


def dpo_record(fmt: str, prompt: Messages, chosen: Row, rejected: Row, meta: dict[str, Any]) -> dict[str, Any]:
    if fmt == "openai-dpo":
        return {"input": {"messages": prompt}, "preferred_output": [assistant(chosen)],
                "non_preferred_output": [assistant(rejected)]}
    return {"prompt": prompt, "chosen": [assistant(chosen)], "rejected": [assistant(rejected)], "metadata": meta}
