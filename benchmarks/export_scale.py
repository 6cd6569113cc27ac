"""export_scale: `agentloop export` over a synthetic run of 1,000,000 attempts; records/s and peak RSS.

The export streams the SQLite store one task at a time, so its memory should stay flat however big
the run is, and it should read at least at `READ_TARGET` attempts/s. This benchmark checks both at
the scale of a large code run.

The run dir is written through the real store API (`AttemptStore.create`, `put_tasks`,
`write_batch`) with a fixed seed. Per task (`--attempts / --tasks` of them, 100 by default): an
`8:4` revision strategy (8 turn-0 chains in one request sharing one messages list, then up to 3
revision turns per chain whose prompts extend the previous one with the reply and a feedback
message; a chain stops once the feedback tests pass, as `stop_on_feedback_pass` does), and a
`parallel` strategy whose single request (one request id, one messages list) takes the rest of the
task's quota, so the run holds exactly `--attempts` attempts. Strategies run one after the other,
tasks 16 at a time in finish order, as a run records them. Replies are fenced Python: per task a
few (5-20) distinct correct implementations, each also in comment/blank-line/indentation variants
(AST-equal, so `--dedup code` folds them), and 5-25 wrong ones (failed, timeout, error; some
"near misses" that pass the feedback tests but fail grading); a per-task pass rate (some tasks
never pass, some nearly always) gives about a third passed. 1% of attempts are infra errors.

Every measurement runs in its own child process (`--child`), so its peak RSS is its own, not the
synthesizer's: VmHWM from /proc, because `ru_maxrss` survives exec and a child would report at
least the parent's peak. Every child imports the export package before it starts, so the RSS
ratio compares data held, not modules. The store file is read once beforehand so each
measurement reads from the page cache. Wall times cover the work only (opening the store
included, interpreter start and imports not).

- `scan` (the baseline): `AttemptStore.iter_completed_by_task()` to the end, counting rows; the
  SQLite read that every export streams over, with no processing: the floor.
- `sft`, `dpo`, `trajectory`: `export_runs` with `--format sft`, `--format dpo` and `--format sft
  --shape trajectory` (token counts from usage numbers, so no tokenizer is loaded).

Prints one line per measurement (attempts/s read, records/s, peak RSS), one `target ...:
PASS|FAIL (value)` line per export and target (peak RSS < 1 GiB; read >= 20,000 attempts/s), the
peak-RSS ratio of the SFT export to the scan, then `ratio export_scale X` as the last line: the
SFT export's attempts/s ÷ the scan's attempts/s, i.e. how close the export runs to the bare scan
(1.0: processing is free). Exit status 1 when a target fails.

    python benchmarks/export_scale.py [--attempts 1000000] [--tasks N] [--formats sft,dpo,trajectory]
                                      [--keep DIR] [--profile sft]

`--keep DIR` keeps the synthesized run dir there and reuses it when it already holds a run of the
same parameters (synthesis takes about a minute at full size). `--profile NAME` runs that
measurement once more under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import importlib
import json
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agentloop.attempt import Attempt, AttemptKind
from agentloop.feedback import revision_messages
from agentloop.loop import first_messages
from agentloop.sandbox.types import ExecResult, Verdict
from agentloop.store import DB_NAME, AttemptStore
from agentloop.strategy import slot_seed
from agentloop.tasks.model import Suite, Task

RSS_TARGET_MIB = 1024.0
READ_TARGET = 20_000.0
"""Completed attempts read per second, per export."""
SEED = 20240601
BATCH = 20_000
"""Attempts per `write_batch` (one transaction)."""
WINDOW = 16
"""Tasks in flight at once: their attempts are recorded interleaved, in finish order."""
REVISION = "8:4"
REVISION_CHAINS, REVISION_TURNS = 8, 4
PARALLEL = "parallel"
INFRA_RATE = 0.01
MEASUREMENTS: dict[str, dict[str, str]] = {
    "sft": {"format": "sft"},
    "dpo": {"format": "dpo"},
    "trajectory": {"format": "sft", "shape": "trajectory"},
}
SUITE = Suite(name="synthetic")
PARAMS_KEY = "export_scale"
"""Meta key recording the synthesis parameters, so `--keep` reuses only a matching run."""


# --- synthetic code -------------------------------------------------------------------------

_VARS = ("x", "v", "n", "item", "e")
_ACCS = ("total", "acc", "s", "result", "out")
_PREDICATES = ("{v} % k == 0", "{v} > k", "{v} != k", "({v} + k) % 3 == 0")
_CORRECT = (
    "def {ep}(xs, k):\n    {acc} = 0\n    for {v} in xs:\n        if {p}:\n            {acc} += {v} * {c}\n    return {acc}\n",
    "def {ep}(xs, k):\n    return sum({v} * {c} for {v} in xs if {p})\n",
    "def {ep}(xs, k):\n    {acc} = [{v} for {v} in xs if {p}]\n    return sum({acc}) * {c}\n",
    "def {ep}(xs, k):\n    return {c} * sum(filter(lambda {v}: {p}, xs))\n",
    "def {ep}(xs, k):\n    {acc} = 0\n    i = 0\n    while i < len(xs):\n        {v} = xs[i]\n        if {p}:\n"
    "            {acc} += {v}\n        i += 1\n    return {acc} * {c}\n",
)
_WRONG: tuple[tuple[str, Verdict, float], ...] = (  # (code, grading verdict, chance it is a near miss)
    ("def {ep}(xs, k):\n    {acc} = 0\n    for {v} in xs[1:]:\n        if {p}:\n            {acc} += {v} * {c}\n    return {acc}\n",
     Verdict.FAILED, 0.7),
    ("def {ep}(xs, k):\n    return sum({v} for {v} in xs if {p})\n", Verdict.FAILED, 0.2),
    ("def {ep}(xs, k):\n    return sum({v} * {c} for {v} in xs if not ({p}))\n", Verdict.FAILED, 0.0),
    ("def {ep}(xs, k):\n    return sum(xs) * {c}\n", Verdict.FAILED, 0.3),
    ("def {ep}(xs, k):\n    {acc} = 0\n    for {v} in sorted(set(xs)):\n        if {p}:\n            {acc} += {v} * {c}\n"
     "    return {acc}\n", Verdict.FAILED, 0.8),
    ("def {ep}(xs, k):\n    {acc} = 0\n    i = 0\n    while i < len(xs):\n        {v} = xs[i]\n        if {p}:\n"
     "            {acc} += {v}\n    return {acc} * {c}\n", Verdict.TIMEOUT, 0.0),
    ("def {ep}(xs, k):\n    if not xs:\n        return 0\n    return {ep}(xs, k) + xs[0] * {c}\n", Verdict.ERROR, 0.0),
    ("def {ep}(xs, k)\n    return sum({v} * {c} for {v} in xs if {p})\n", Verdict.FAILED, 0.0),  # syntax error
)
_GRADING = {
    Verdict.PASSED: ExecResult(Verdict.PASSED, 0.031, exit_code=0),
    Verdict.FAILED: ExecResult(Verdict.FAILED, 0.034, exit_code=1, stderr="AssertionError", detail="AssertionError"),
    Verdict.TIMEOUT: ExecResult(Verdict.TIMEOUT, 3.0, detail="timed out after 3.0 s"),
    Verdict.ERROR: ExecResult(Verdict.ERROR, 0.12, exit_code=1, detail="RecursionError: maximum recursion depth exceeded"),
}


def _reformat(code: str, rng: random.Random) -> str:
    """An AST-equal spelling of `code`: a comment, a blank line, 2-space indents, a trailing comment."""
    lines = code.rstrip("\n").split("\n")
    if rng.random() < 0.5:
        lines.insert(1, "    # keep the matching items, scaled")
    if rng.random() < 0.3:
        lines.insert(1, "")
    if rng.random() < 0.3:
        lines[-1] += "  # done"
    if rng.random() < 0.3:
        lines = [" " * ((len(ln) - len(ln.lstrip(" "))) // 2) + ln.lstrip(" ") for ln in lines]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Answer:
    """One reply a model gives to a task, with how the sandbox judges it."""

    completion: str
    code: str
    verdict: Verdict
    feedback_verdict: Verdict
    feedback: str


class TaskModel:
    """A task and the answers a model gives to it: correct ones (Zipf-weighted, so a few dominate,
    and sometimes reformatted) and wrong ones."""

    def __init__(self, index: int, rng: random.Random):
        self.index = index
        ep = f"scaled_sum_{index:06d}"
        c, pred = rng.randint(2, 9), rng.choice(_PREDICATES)
        self.task = Task(
            id=f"synthetic/{index:06d}", entry_point=ep,
            prompt=f'def {ep}(xs: list[int], k: int) -> int:\n    """Return {c} times the sum of the items v of xs '
                   f'with {pred.format(v="v")}.\n    >>> {ep}([1, 2, 3, 4], 2)\n    ...\n    """\n',
            grading_tests="def check(candidate):\n    assert candidate([], 1) == 0\n    assert candidate([3, 6, 7], 3) > 0\n",
            feedback_tests="def check(candidate):\n    assert candidate([1, 2, 3, 4], 2) is not None\n",
        )
        self.pass_rate = rng.choice((0.0, 0.0, 0.9, 0.95)) if rng.random() < 0.25 else rng.uniform(0.1, 0.6)
        fill = {"ep": ep, "c": c}
        self.correct = self._codes(_CORRECT, rng.randint(5, 20), rng, fill, pred)
        self.wrong = self._codes(tuple(t for t, _, _ in _WRONG), rng.randint(5, 25), rng, fill, pred)
        self.wrong_answers = []
        for w, code in self.wrong:
            _, verdict, near_miss = _WRONG[w]
            feedback_verdict = Verdict.PASSED if rng.random() < near_miss else verdict
            self.wrong_answers.append(self._answer(code, verdict, feedback_verdict, rng, ep))
        self._variants: dict[tuple[int, int], Answer] = {}
        self._broken = self._answer(f"def {ep}(xs, k)\n    return 0\n", Verdict.FAILED, Verdict.FAILED, rng, ep)

    @staticmethod
    def _codes(templates: tuple[str, ...], count: int, rng: random.Random, fill: dict[str, Any],
               pred: str) -> list[tuple[int, str]]:
        """Up to `count` distinct (template index, code) by template and variable names."""
        codes: dict[str, int] = {}
        for _ in range(count * 4):
            if len(codes) >= count:
                break
            t, v, acc = rng.randrange(len(templates)), rng.choice(_VARS), rng.choice(_ACCS)
            code = templates[t].format(v=v, acc=acc, p=pred.format(v=v), **fill)
            codes.setdefault(code, t)
        return [(t, code) for code, t in codes.items()]

    @staticmethod
    def _answer(code: str, verdict: Verdict, feedback_verdict: Verdict, rng: random.Random, ep: str) -> Answer:
        preface = "Here it is:\n\n" if rng.random() < 0.1 else ""
        feedback = {
            Verdict.PASSED: "Your code passes the example tests.",
            Verdict.FAILED: "Your code fails the example tests: AssertionError",
            Verdict.TIMEOUT: "Your code timed out after 3.0 s.",
            Verdict.ERROR: "Your code crashed: RecursionError.",
        }[feedback_verdict]
        return Answer(f"{preface}```python\n{code}```", code.rstrip("\n"), verdict, feedback_verdict, feedback)

    def answer(self, rng: random.Random, passing: float, need: str | None = None) -> Answer:
        """A reply, correct with probability `passing`; `need` forces the feedback tests' outcome
        (`pass`: correct or a near miss, `fail`: a wrong answer the feedback tests catch)."""
        if need == "fail":
            caught = [a for a in self.wrong_answers if a.feedback_verdict is not Verdict.PASSED]
            return _zipf(caught, rng, 1.2) if caught else self._broken
        if need == "pass":
            near = [a for a in self.wrong_answers if a.feedback_verdict is Verdict.PASSED]
            if near and rng.random() >= passing:
                return _zipf(near, rng, 1.2)
        elif rng.random() >= passing and self.wrong_answers:
            return _zipf(self.wrong_answers, rng, 1.2)
        j = _zipf(range(len(self.correct)), rng, 1.0)
        k = 0 if rng.random() < 0.6 else rng.randrange(1, 8)  # formatting variant (0: as first written)
        if (j, k) not in self._variants:
            code = self.correct[j][1] if k == 0 else _reformat(self.correct[j][1], rng)
            self._variants[j, k] = self._answer(code, Verdict.PASSED, Verdict.PASSED, rng, self.task.entry_point)
        return self._variants[j, k]


T = TypeVar("T")


def _zipf(items: Sequence[T], rng: random.Random, alpha: float) -> T:
    """A few items dominate, as a sampled model repeats its likeliest answers."""
    return items[(int(rng.paretovariate(alpha)) - 1) % len(items)]


# --- the synthetic run ----------------------------------------------------------------------


def _chain_plan(rng: random.Random, model: TaskModel) -> list[list[str]]:
    """Per revision chain, each turn's outcome: `go` (feedback fails: another turn), `stop`
    (feedback passes), `infra` (the chain ends), `last` (turn M-1: anything). Drawn before the
    attempts so the parallel strategy knows how much of the task's quota is left."""
    near = sum(a.feedback_verdict is Verdict.PASSED for a in model.wrong_answers) / max(1, len(model.wrong_answers))
    chains = []
    for _ in range(REVISION_CHAINS):
        turns: list[str] = []
        for t in range(REVISION_TURNS):
            passing = min(0.95, model.pass_rate + 0.15 * t)
            if rng.random() < INFRA_RATE:
                turns.append("infra")
                break
            if t == REVISION_TURNS - 1:
                turns.append("last")
                break
            if rng.random() < passing + (1 - passing) * near:
                turns.append("stop")
                break
            turns.append("go")
        chains.append(turns)
    return chains


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(m["content"]) for m in messages) // 4 + 8 * len(messages)


class Synthesizer:
    """Writes `attempts` attempts over `tasks` tasks, deterministically from `seed`."""

    def __init__(self, attempts: int, tasks: int, seed: int):
        self.attempts, self.tasks, self.seed = attempts, tasks, seed
        self.clock = 1.7e9

    def _task(self, i: int) -> tuple[TaskModel, list[list[str]], random.Random]:
        rng = random.Random(f"{self.seed}/{i}")
        model = TaskModel(i, rng)
        return model, _chain_plan(rng, model), rng

    def quota(self, i: int) -> int:
        base, extra = divmod(self.attempts, self.tasks)
        return base + (i < extra)

    def write(self, run_dir: Path) -> None:
        store = AttemptStore.create(run_dir)
        try:
            store.set_meta(PARAMS_KEY, self.params())  # first: a half-written run is known as ours
            store.set_meta("run_id", "synthetic-export-scale")
            store.set_meta("config", {
                "suite": SUITE.name, "model": {"model": "synthetic"}, "seed": 0,
                "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 512},
                "splits": [REVISION], "revision": {"stop_on_feedback_pass": True},
            })
            store.set_meta("suite", dataclasses.asdict(SUITE))
            store.put_tasks([TaskModel(i, random.Random(f"{self.seed}/{i}")).task for i in range(self.tasks)], {})
            batch: list[Attempt] = []
            for attempt in self._attempts():
                batch.append(attempt)
                if len(batch) >= BATCH:
                    store.write_batch(batch)
                    batch = []
            store.write_batch(batch)
            store.set_meta("finished_at", self.clock)
        finally:
            store.close()

    def params(self) -> dict[str, int]:
        return {"attempts": self.attempts, "tasks": self.tasks, "seed": self.seed}

    def _attempts(self) -> Iterator[Attempt]:
        """Strategy by strategy (as a run goes), WINDOW tasks at a time, in finish order."""
        for strategy in (PARALLEL, REVISION):
            for start in range(0, self.tasks, WINDOW):
                window: list[tuple[float, Attempt]] = []
                for i in range(start, min(self.tasks, start + WINDOW)):
                    model, plan, rng = self._task(i)
                    make = self._parallel if strategy == PARALLEL else self._revision
                    window += [(a.turn + rng.random(), a) for a in make(model, plan, rng)]
                window.sort(key=lambda p: p[0])
                self.clock += 30.0
                for _, a in window:
                    yield a

    def _attempt(self, model: TaskModel, strategy: str, chain: int, turn: int, messages: list[dict[str, Any]],
                 answer: Answer, infra: bool, request_id: str, seed: int | None, prompt_tokens: int,
                 cached: int, rng: random.Random) -> Attempt:
        started = self.clock + turn * 10.0 + rng.random() * 5
        latency = 0.5 + rng.random() * 4
        common: dict[str, Any] = dict(
            strategy=strategy, task_id=model.task.id, chain=chain, turn=turn, messages=messages,
            started_at=started, finished_at=started + latency + 0.05, request_id=request_id,
            completion=answer.completion, code=answer.code, prompt_tokens=prompt_tokens, cached_prompt_tokens=cached,
            completion_tokens=len(answer.completion) // 4 + 5, latency_s=latency,
            extra={"seed": seed, "finish_reason": "stop"},
        )
        if infra:
            return Attempt(kind=AttemptKind.INFRA_ERROR, error="sandbox (feedback tests): container exited unexpectedly",
                           grading=_GRADING[answer.verdict], **common)
        return Attempt(kind=AttemptKind.COMPLETED, verdict=answer.verdict, grading=_GRADING[answer.verdict],
                       feedback=answer.feedback, feedback_verdict=answer.feedback_verdict, **common)

    def _parallel(self, model: TaskModel, plan: list[list[str]], rng: random.Random) -> Iterator[Attempt]:
        """One request for the rest of the task's quota: one request id and one messages list."""
        n = self.quota(model.index) - sum(len(turns) for turns in plan)
        messages = first_messages(SUITE, model.task)
        prompt_tokens, seed = _tokens(messages), slot_seed(0, PARALLEL, model.index, 0, 0)
        request_id = f"chatcmpl-p{model.index:06d}"
        for chain in range(n):
            yield self._attempt(model, PARALLEL, chain, 0, messages, model.answer(rng, model.pass_rate),
                                rng.random() < INFRA_RATE, request_id, seed, prompt_tokens, 0, rng)

    def _revision(self, model: TaskModel, plan: list[list[str]], rng: random.Random) -> Iterator[Attempt]:
        """Turn 0 of every chain in one request; then each chain alone, its prompt growing by the
        reply and its feedback each turn."""
        first = first_messages(SUITE, model.task)
        first_tokens = _tokens(first)
        for chain, turns in enumerate(plan):
            messages, cached, prompt_tokens = first, first_tokens, first_tokens  # the parallel request cached it
            for turn, outcome in enumerate(turns):
                passing = min(0.95, model.pass_rate + 0.15 * turn)
                answer = model.answer(rng, passing, {"go": "fail", "stop": "pass"}.get(outcome))
                request_id = f"chatcmpl-r{model.index:06d}-0" if turn == 0 else f"chatcmpl-r{model.index:06d}-{chain}-{turn}"
                seed = slot_seed(0, REVISION, model.index, 0 if turn == 0 else chain, turn)
                yield self._attempt(model, REVISION, chain, turn, messages, answer, outcome == "infra", request_id,
                                    seed, prompt_tokens, cached, rng)
                cached = prompt_tokens
                messages = revision_messages(messages, answer.completion, answer.feedback)
                prompt_tokens = _tokens(messages)


def synthesize(run_dir: Path, synth: Synthesizer) -> tuple[float, bool]:
    """(seconds spent, whether a matching run was reused) for a run dir holding `synth`'s run."""
    if (run_dir / DB_NAME).exists():
        store = AttemptStore.open(run_dir)
        try:
            params, finished = store.get_meta(PARAMS_KEY), store.get_meta("finished_at") is not None
            count = store.count()
        finally:
            store.close()
        if params == synth.params() and finished and count == synth.attempts:  # complete: reuse it
            return 0.0, True
        if params is None:
            raise SystemExit(f"{run_dir}: holds a run this benchmark did not make; give another --keep dir")
        for suffix in ("", "-wal", "-shm"):  # ours, with other parameters: make it again
            (run_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    t0 = time.perf_counter()
    synth.write(run_dir)
    return time.perf_counter() - t0, False


# --- measurements (child processes) ---------------------------------------------------------


def _scan(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    store = AttemptStore.open(run_dir)
    try:
        n = sum(1 for _ in store.iter_completed_by_task())
    finally:
        store.close()
    return {"attempts_read": n, "records": 0}


def _export(name: str) -> Callable[[Path, Path], dict[str, Any]]:
    def run(run_dir: Path, out_dir: Path) -> dict[str, Any]:
        from rich.console import Console

        from agentloop.export import ExportOptions, export_runs

        out = out_dir / f"{name}.jsonl"
        stats = export_runs([run_dir], out, ExportOptions(tokenizer="usage", **MEASUREMENTS[name]),  # type: ignore[arg-type]
                            console=Console(stderr=True, quiet=True))
        return {"attempts_read": stats.attempts_read, "records": stats.records["train"] + stats.records["val"],
                "out_mib": out.stat().st_size / 2**20}
    return run


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, which starts afresh at exec. (`ru_maxrss` does not: a child
    started by a big parent reports at least the parent's peak.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(name: str, run_dir: Path, out_dir: Path, profile: bool) -> None:
    """Run one measurement; print its result as one JSON line."""
    importlib.import_module("agentloop.export")  # imports before the clock (and the RSS baseline) start

    work = _scan if name == "scan" else _export(name)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    result = prof.runcall(work, run_dir, out_dir) if prof else work(run_dir, out_dir)
    wall = time.perf_counter() - t0
    rss = peak_rss_mib()
    if prof:
        stats = pstats.Stats(prof, stream=sys.stderr).strip_dirs().sort_stats("tottime")
        stats.print_stats(20)
        stats.sort_stats("cumulative").print_stats(25)
    print(json.dumps({"name": name, "wall_s": wall, "rss_mib": rss, **result}))


def measure(name: str, run_dir: Path, out_dir: Path, profile: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--run-dir", str(run_dir), "--out-dir", str(out_dir)]
    proc = subprocess.run(cmd + (["--profile-child"] if profile else []), stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _warm_cache(run_dir: Path) -> None:
    """Read the store once so every measurement starts from the page cache, whichever runs first."""
    for path in run_dir.glob(f"{DB_NAME}*"):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=1_000_000, help="attempts in the synthetic run (default 1,000,000)")
    ap.add_argument("--tasks", type=int, default=None, help="tasks (default: attempts / 100)")
    ap.add_argument("--formats", default=",".join(MEASUREMENTS), help=f"exports to measure (default {','.join(MEASUREMENTS)})")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run dir here; reuse it if it matches")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--profile", default=None, help="also run this measurement (scan or an export) under cProfile")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.run_dir, args.out_dir, args.profile_child)
        return 0
    formats = [f for f in args.formats.split(",") if f]
    if unknown := [f for f in formats + ([args.profile] if args.profile else []) if f not in (*MEASUREMENTS, "scan")]:
        ap.error(f"unknown measurement(s) {', '.join(unknown)}; expected scan or one of {', '.join(MEASUREMENTS)}")
    tasks = args.tasks or max(1, args.attempts // 100)
    if args.attempts // tasks < REVISION_CHAINS * REVISION_TURNS + 8:
        ap.error(f"--attempts / --tasks must be at least {REVISION_CHAINS * REVISION_TURNS + 8} "
                 "(a task's revision chains and a parallel request)")
    with tempfile.TemporaryDirectory(prefix="agentloop-export-scale-") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        synth_s, reused = synthesize(run_dir, Synthesizer(args.attempts, tasks, args.seed))
        db_mib = sum(p.stat().st_size for p in run_dir.glob(f"{DB_NAME}*")) / 2**20
        store = AttemptStore.open(run_dir)
        try:
            completed, infra = store.count(AttemptKind.COMPLETED), store.count(AttemptKind.INFRA_ERROR)
        finally:
            store.close()
        how = f"reused {run_dir}" if reused else (f"synthesized in {synth_s:.1f} s "
                                                  f"({args.attempts / synth_s:,.0f} attempts/s)")
        print(f"run: {args.attempts:,} attempts ({completed:,} completed, {infra:,} infra errors) over {tasks:,} tasks; "
              f"{how}; store {db_mib:,.0f} MiB", flush=True)
        _warm_cache(run_dir)
        results: dict[str, dict[str, Any]] = {}
        for name in ["scan", *formats]:
            r = results[name] = measure(name, run_dir, out_dir)
            rate, rec = r["attempts_read"] / r["wall_s"], r["records"] / r["wall_s"]
            extra = ("" if name == "scan" else
                     f", {r['records']:,} records ({rec:,.0f} records/s), output {r['out_mib']:,.0f} MiB")
            print(f"{name}: {r['attempts_read']:,} attempts read in {r['wall_s']:.1f} s ({rate:,.0f} attempts/s){extra}; "
                  f"peak RSS {r['rss_mib']:,.0f} MiB", flush=True)
        if args.profile:
            print(f"profile of {args.profile} (cProfile, on stderr):", flush=True)
            measure(args.profile, run_dir, out_dir, profile=True)
    scan = results["scan"]
    scan_rate = scan["attempts_read"] / scan["wall_s"]
    targets: list[tuple[str, bool, str]] = []
    for name in formats:
        r = results[name]
        rate = r["attempts_read"] / r["wall_s"]
        targets += [(f"{name} peak RSS < {RSS_TARGET_MIB:,.0f} MiB", r["rss_mib"] < RSS_TARGET_MIB, f"{r['rss_mib']:,.0f} MiB"),
                    (f"{name} read >= {READ_TARGET:,.0f} attempts/s", rate >= READ_TARGET, f"{rate:,.0f}/s")]
    for name, ok, value in targets:
        print(f"target {name}: {'PASS' if ok else 'FAIL'} ({value})")
    ref = "sft" if "sft" in results else next(iter(formats), None)  # the ratio is SFT's unless it was left out
    if ref:
        r = results[ref]
        print(f"peak RSS {ref}/scan: {r['rss_mib'] / scan['rss_mib']:.2f} ({r['rss_mib']:,.0f} / {scan['rss_mib']:,.0f} MiB)")
        print(f"ratio export_scale{'' if ref == 'sft' else '_' + ref} {r['attempts_read'] / r['wall_s'] / scan_rate:.3f}")
    return 0 if all(ok for _, ok, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
