"""`agentloop run`: tasks → strategy → model → sandbox → store, then the report.

Order matters for users: everything that can fail fast (config, data, server, Docker, image) is
checked before any attempt is made; the run dir is created only then.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog
from rich.console import Console

from agentloop import logs
from agentloop.agent.episode import Bounded, run_task_episodes
from agentloop.attempt import Attempt, AttemptKind
from agentloop.config import RunConfig, from_mapping, get_field, set_field, to_dict, validate
from agentloop.errors import ConfigError, RunDirError
from agentloop.loop import Context
from agentloop.math.scorers import make_scorer
from agentloop.model.client import ModelClient
from agentloop.progress import RunProgress
from agentloop.report import Report, write_outputs
from agentloop.sandbox import engine
from agentloop.sandbox.docker_pool import DockerPool
from agentloop.sandbox.workspace import WorkspacePool
from agentloop.schedule import AdaptiveTable, run_adaptive_task, run_task_chains
from agentloop.store import AttemptStore
from agentloop.strategy import ADAPTIVE, PARALLEL, Split, fixed_splits, parse_split
from agentloop.tasks.model import Suite, Task
from agentloop.tasks.suites import load_suite, load_suite_definition, select
from agentloop.verify import calibrate_time_limits

log = structlog.get_logger()


FIXED_ON_RESUME = ("model.model", "model.samples_per_request")
"""[model] settings a resumed run keeps (the model, and `n` per request, which the seeds follow)."""


def resumable(name: str) -> bool:
    """Whether a resumed run may change setting `name`: where the model is served and how hard to
    push it ([model] but FIXED_ON_RESUME, sandbox.pool_size). The suite, tasks, samples, sampling
    and image are fixed by the run dir."""
    return (name.startswith("model.") and name not in FIXED_ON_RESUME) or name in ("sandbox.pool_size", "runs_dir")


def create_store(run_dir: Path, run_id: str, cfg: RunConfig, tasks: list[Task], suite: Suite) -> AttemptStore:
    """A new run dir's store with its config, suite and tasks; blocking, so call it in a worker thread."""
    store = AttemptStore.create(run_dir)
    store.set_meta("run_id", run_id)
    store.set_meta("config", to_dict(cfg))
    store.set_meta("suite", asdict(suite))
    store.set_meta("created_at", time.time())
    store.put_tasks(tasks, {})  # time limits follow once calibrated
    return store


def _resumed_config(run_dir: Path, stored: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    cfg = stored
    for name, value in changes.items():
        if resumable(name):
            cfg = set_field(cfg, name, value)
        elif value != get_field(stored, name):
            raise ConfigError(
                f"--resume {run_dir}: '{name}' = {value!r:.200} differs from the run's "
                f"{get_field(stored, name)!r:.200}; "
                "a resumed run keeps its settings (only [model] connection and retry settings and "
                "sandbox.pool_size may change): start a new run to change it"
            )
    return validate(cfg, f"--resume {run_dir}")


def _load_resume(run_dir: Path,
                 changes: Mapping[str, Any]) -> tuple[RunConfig, AttemptStore, Suite, list[Task], dict[str, float]]:
    """The stored config, suite and tasks (no task file is read again), with `changes` applied."""
    store = AttemptStore.open(run_dir)
    try:
        if graded := store.get_meta("graded_file"):
            raise RunDirError(
                f"{run_dir}: made by `agentloop grade {graded}`; grade the file again instead of resuming")
        where = f"{store.path}:meta"
        raw_cfg, raw_suite = store.get_meta("config"), store.get_meta("suite")
        stored_tasks = store.tasks()
        if raw_cfg is None or not stored_tasks:
            missing = "config" if raw_cfg is None else "tasks"
            raise RunDirError(f"{run_dir}: no {missing} recorded (half-written run dir); start a new run")
        stored = from_mapping(RunConfig, raw_cfg, f"{where}.config")
        cfg = _resumed_config(run_dir, stored, changes)
        # Run dirs made before the suite was stored read the suite definition (not its data) again.
        suite = from_mapping(Suite, raw_suite, f"{where}.suite") if raw_suite else load_suite_definition(cfg.suite)[0]
    except BaseException:
        store.close()
        raise
    limits = {t.id: lim for t, lim in stored_tasks if lim is not None}
    return cfg, store, suite, [t for t, _ in stored_tasks], limits


def new_run_dir(cfg: RunConfig) -> tuple[Path, str]:
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    name = Path(cfg.suite).stem
    return Path(cfg.runs_dir) / f"{name}-{run_id}", run_id


async def _preflight(cfg: RunConfig, client: ModelClient, tasks: list[Task]) -> None:
    await client.check()
    if not needs_sandbox(tasks):
        return
    docker = await anyio.to_thread.run_sync(engine.connect)
    try:
        await anyio.to_thread.run_sync(engine.ensure_image, docker, cfg.sandbox.image)
    finally:
        docker.close()


async def run(
    cfg: RunConfig, resume: Path | None = None, console: Console | None = None, *,
    changes: Mapping[str, Any] | None = None,
) -> Report:
    """Run `cfg` into a new run dir, or finish the run in `resume`.

    On resume the run dir's own config, suite and tasks are used; `changes` (dotted names, e.g.
    {"model.base_url": ...}) are the settings the user gave explicitly: the `resumable` ones apply,
    any other that differs from the stored value is a ConfigError. Without `changes`, cfg's model
    base_url and concurrency apply.
    """
    console = console or Console(stderr=True)
    store = None
    if resume:
        if changes is None:
            changes = {"model.base_url": cfg.model.base_url, "model.concurrency": cfg.model.concurrency}
        cfg, store, suite, tasks, limits = await anyio.to_thread.run_sync(_load_resume, resume, changes)
        run_dir, run_id = resume, store.get_meta("run_id")
    else:
        validate(cfg)
        limits = {}
    try:
        given = None  # a resumed run reads its table from the store's meta, not from the file it came from
        if cfg.adaptive.enabled and cfg.adaptive.table and store is None:
            given = await anyio.to_thread.run_sync(load_adaptive_table, Path(cfg.adaptive.table), cfg)
        if store is None:
            suite, all_tasks = await anyio.to_thread.run_sync(load_suite, cfg.suite, cfg.data)
            tasks = select(all_tasks, cfg.limit, cfg.task_ids)
            check_agent_tasks(cfg, tasks)
            run_dir, run_id = new_run_dir(cfg)
        scorer = make_scorer(cfg.scorer, base_url=cfg.model.base_url, model=cfg.model.model)
        async with ModelClient(cfg.model, cfg.sampling) as client, scorer:
            await _preflight(cfg, client, tasks)
            if store is None:
                store = await anyio.to_thread.run_sync(create_store, run_dir, run_id, cfg, tasks, suite)
            with logs.to_file(run_dir / "log.jsonl"):
                log.info("run start", run_id=run_id, run_dir=str(run_dir), tasks=len(tasks), resume=bool(resume))
                await _execute(cfg, suite, tasks, limits, store, client, run_id, console, given,
                               scorer if cfg.scorer.kind != "none" else None)
                store.set_meta("finished_at", time.time())
    finally:
        if store is not None:
            store.close()
    return await anyio.to_thread.run_sync(write_outputs, run_dir)


def check_agent_tasks(cfg: RunConfig, tasks: list[Task]) -> None:
    """Agent episodes act on function tasks (a workspace with solution.py): not on math."""
    agent = [s.name for s in fixed_splits(cfg.splits, cfg.samples, cfg.adaptive.enabled) if s.agent]
    if agent and (math := next((t for t in tasks if t.is_math), None)):
        raise ConfigError(f"splits: {agent[0]!r} runs agent episodes, which need function tasks, but "
                          f"{cfg.suite} has math tasks (e.g. {math.id}); expected a code suite, or no agent split")


async def _execute(
    cfg: RunConfig, suite: Suite, tasks: list[Task], limits: dict[str, float], store: AttemptStore,
    client: ModelClient, run_id: str, console: Console, given: AdaptiveTable | None,
    scorer: Callable[[str, str], Awaitable[float | None]] | None = None,
) -> None:
    sandbox = DockerPool.start(cfg.sandbox, run_id) if needs_sandbox(tasks) else nullcontext(NoSandbox())
    splits = fixed_splits(cfg.splits, cfg.samples, cfg.adaptive.enabled)
    async with sandbox as pool, _workspaces(cfg, run_id, any(s.agent for s in splits)) as workspaces:
        if len(limits) < len(tasks):
            with console.status(f"calibrating time limits on {len(tasks)} reference solutions"):
                limits = await calibrate_time_limits(pool, tasks, suite, cfg.sandbox.image)
            await anyio.to_thread.run_sync(store.put_tasks, tasks, limits)
        ctx = Context(client, pool, suite, limits, _no_record, PARALLEL, cfg.revision, cfg.sampling.seed,
                      {t.id: i for i, t in enumerate(tasks)}, scorer=scorer,
                      last_answer_wins=cfg.math.last_answer_wins, agent=cfg.agent,
                      workspaces=Bounded(workspaces, cfg.agent.max_live) if workspaces is not None else None)
        most = sum(s.generations for s in splits) * len(tasks)
        await _phase(store, console, most, partial(_run_fixed, ctx, cfg, tasks, splits, store))
        if cfg.adaptive.enabled:
            table, adaptive_tasks = await _adaptive_plan(cfg, store, tasks, given)
            await _phase(store, console, table.budget * len(adaptive_tasks),  # table.budget == cfg.budget
                         partial(_run_adaptive, ctx, cfg, adaptive_tasks, table, store))


@asynccontextmanager
async def _workspaces(cfg: RunConfig, run_id: str, agent: bool) -> AsyncIterator[WorkspacePool | None]:
    """The run's episode workspaces (a warm pool of containers), when it has an agent split."""
    if not agent:
        yield None
        return
    async with WorkspacePool(cfg.sandbox, run_id, warm=min(cfg.agent.max_live, cfg.sandbox.workspace_warm)) as pool:
        yield pool


def needs_sandbox(tasks: list[Task]) -> bool:
    """Math tasks are graded by canonical answer: a math-only run needs no Docker."""
    return any(not t.is_math for t in tasks)


class NoSandbox:
    """The sandbox of a math-only run: nothing may run in it."""

    async def run_suites(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a math-only run has no sandbox")

    async def run_tests(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a math-only run has no sandbox")

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a math-only run has no sandbox")


async def _no_record(a: Attempt) -> None:
    raise RuntimeError("a Context needs a record function")


async def _phase(store: AttemptStore, console: Console, most: int,
                 go: Callable[[Callable[[Attempt], Awaitable[None]]], Awaitable[None]]) -> None:
    """Run `go(record)` with the store's writer; everything is on disk when it returns."""
    async with store.writer() as writer:
        with RunProgress(console, most) as progress:

            async def record(a: Attempt) -> None:
                await writer.add(a)
                progress.update(a)

            await go(record)
    log.info("phase end", attempts=writer.count, infra_errors=progress.infra,
             duplicates_ignored=store.duplicates_ignored)


async def _run_fixed(ctx: Context, cfg: RunConfig, tasks: list[Task], splits: list[Split], store: AttemptStore,
                     record: Callable[[Attempt], Awaitable[None]]) -> None:
    """Every fixed split over every task, all at once (the client and the pool bound the load)."""
    async with anyio.create_task_group() as tg:
        for split in splits:
            share = cfg.budget / split.chains if cfg.budget_unit == "tokens" and cfg.budget is not None else None
            sctx = replace(ctx, record=record, strategy=split.name, token_share=share)
            if split.agent:
                history = await anyio.to_thread.run_sync(episode_history, store, split.name)
                log.info("plan", strategy=split.name, episodes=split.chains, steps=split.turns,
                         episodes_logged=sum(map(len, history.values())))
                for task in tasks:
                    tg.start_soon(run_task_episodes, sctx, task, split.chains, split.turns, history.get(task.id, {}))
                continue
            tails = await anyio.to_thread.run_sync(store.chain_tails, split.name)
            log.info("plan", strategy=split.name, chains=split.chains, turns=split.turns, chains_logged=len(tails))
            for task in tasks:
                tg.start_soon(run_task_chains, sctx, task, [split.turns] * split.chains, tails,
                              cfg.model.samples_per_request)


def episode_history(store: AttemptStore, strategy: str) -> dict[str, dict[int, list[Attempt]]]:
    """task → episode → its completed steps in order, the last one with its messages (what
    `--resume` replays and goes on from)."""
    rows: dict[str, dict[int, list[Attempt]]] = {}
    for a in store.iter_attempts():
        if a.strategy == strategy and a.kind is AttemptKind.COMPLETED:
            rows.setdefault(a.task_id, {}).setdefault(a.chain, []).append(a)
    for (task, chain), (last, _) in store.chain_tails(strategy).items():
        steps = sorted(rows[task][chain], key=lambda a: a.turn)  # the tail is one of the completed rows
        rows[task][chain] = [*steps[:-1], last]
    return rows


async def _run_adaptive(ctx: Context, cfg: RunConfig, tasks: list[Task], table: AdaptiveTable, store: AttemptStore,
                        record: Callable[[Attempt], Awaitable[None]]) -> None:
    tails = await anyio.to_thread.run_sync(store.chain_tails, ADAPTIVE)
    probes = await anyio.to_thread.run_sync(store.first_turn_feedback, ADAPTIVE)
    actx = replace(ctx, record=record, strategy=ADAPTIVE)
    log.info("plan", strategy=ADAPTIVE, tasks=len(tasks), probe=table.probe, table=asdict(table))
    async with anyio.create_task_group() as tg:
        for task in tasks:
            tg.start_soon(run_adaptive_task, actx, task, table, table.budget, tails,
                          {k: v for k, v in probes.items() if k[1] < table.probe}, cfg.model.samples_per_request)


async def _adaptive_plan(cfg: RunConfig, store: AttemptStore, tasks: list[Task],
                         given: AdaptiveTable | None) -> tuple[AdaptiveTable, list[Task]]:
    """The table and the tasks adaptive runs on: a given table (all tasks), else one built from the
    first fold of this run's fixed splits (adaptive then runs on the other tasks). Kept in the
    store's meta so a resumed run decides the same way."""
    if stored := await anyio.to_thread.run_sync(store.get_meta, "adaptive"):
        chosen = set(stored["tasks"])
        return AdaptiveTable.from_json(stored["table"]), [t for t in tasks if t.id in chosen]
    if given:
        table, chosen_tasks = given, tasks
    else:
        from agentloop.compare import fold_table

        fold, rest = first_fold(tasks, cfg.adaptive.folds, cfg.sampling.seed or 0)
        raw = await anyio.to_thread.run_sync(partial(fold_table, store.path.parent, [t.id for t in fold],
                                                     probe=cfg.adaptive.probe, budget=cfg.budget))
        table, chosen_tasks = AdaptiveTable.from_json(raw), rest
    meta = {"table": asdict(table), "tasks": [t.id for t in chosen_tasks]}
    await anyio.to_thread.run_sync(store.set_meta, "adaptive", meta)
    return table, chosen_tasks


def first_fold(tasks: list[Task], folds: int, seed: int) -> tuple[list[Task], list[Task]]:
    """A seeded 1/folds of the tasks (at least one, and at least one left over) and the rest."""
    order = sorted(tasks, key=lambda t: hashlib.sha256(f"{seed}/{t.id}".encode()).hexdigest())
    k = min(max(1, len(tasks) // folds), len(tasks) - 1)
    held = {t.id for t in order[:k]}
    return [t for t in tasks if t.id in held], [t for t in tasks if t.id not in held]


def load_adaptive_table(path: Path, cfg: RunConfig) -> AdaptiveTable:
    """The "adaptive" table of a compare.json (or of RUN_DIR/compare.json); one-line errors."""
    file = path / "compare.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())["adaptive"]
        table = AdaptiveTable.from_json(raw)
    except FileNotFoundError:
        raise ConfigError(f"adaptive.table: no such file {file} (run `agentloop compare RUN_DIR` first)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"adaptive.table: {file} has no valid 'adaptive' table ({type(e).__name__}: {e}); "
                          "expected the compare.json that `agentloop compare` writes") from None
    if table.budget != cfg.budget:
        raise ConfigError(f"adaptive.table: {file} picks splits for a budget of {table.budget} generations, "
                          f"but budget is {cfg.budget}; expected the same budget")
    check_adaptive_table(table, f"adaptive.table: {file}")
    return table  # its probe size too: the bin edges were fitted on scores of that many samples


def check_adaptive_table(table: AdaptiveTable, where: str) -> None:
    """What an adaptive run will look up in the table, checked before a run dir exists: a split
    `N:M` for every difficulty bin (the run's strategies: `parse_split` of each), a probe inside
    the budget. ConfigError naming the bin and the value otherwise."""
    if table.probe < 1 or table.probe >= table.budget:
        raise ConfigError(f"{where}: 'probe' = {table.probe} with a budget of {table.budget}; "
                          "expected 1 <= probe < budget (the probe is part of the budget)")
    bins = [str(b) for b in range(len(table.edges) + 1)]
    if gone := [b for b in bins if b not in table.best]:
        raise ConfigError(f"{where}: 'best' names no split for bin {gone[0]} (the table's {len(table.edges)} edges "
                          f"make bins {bins[0]}..{bins[-1]}); expected the compare.json of a run with fixed splits")
    if extra := sorted(set(table.best) - set(bins)):
        raise ConfigError(f"{where}: 'best' has bin {extra[0]!r}, but its {len(table.edges)} edges make bins "
                          f"{bins[0]}..{bins[-1]}; expected the compare.json that `agentloop compare` writes")
    if table.edges != sorted(table.edges):
        raise ConfigError(f"{where}: 'edges' = {table.edges!r:.80} are not in increasing order")
    for b in bins:
        parse_split(table.best[b], f"{where}: 'best' bin {b}")
