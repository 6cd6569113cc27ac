"""The `agentloop` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import anyio
from rich.console import Console

from agentloop.errors import AgentloopError, ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see: {self.prog} --help)")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"invalid JSON {text!r:.60} ({e.msg}); expected an object like '{{\"top_k\": 20}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r:.60} is not a JSON object; expected one like '{{\"top_k\": 20}}'")
    return value


# `agentloop run` flags and the config field each one sets.
FLAG_FIELDS = {
    "suite": "suite", "data": "data", "samples": "samples", "limit": "limit", "tasks": "task_ids",
    "runs_dir": "runs_dir", "base_url": "model.base_url", "model": "model.model", "api_key": "model.api_key",
    "concurrency": "model.concurrency", "samples_per_request": "model.samples_per_request",
    "request_timeout": "model.timeout_s", "temperature": "sampling.temperature", "top_p": "sampling.top_p",
    "max_tokens": "sampling.max_tokens", "seed": "sampling.seed", "stop": "sampling.stop",
    "extra_body": "sampling.extra_body", "pool_size": "sandbox.pool_size", "image": "sandbox.image",
    "splits": "splits", "budget": "budget", "budget_unit": "budget_unit", "feedback_chars": "revision.feedback_chars",
    "adaptive": "adaptive.enabled", "adaptive_table": "adaptive.table", "probe": "adaptive.probe",
    "scorer": "scorer.kind", "last_answer_wins": "math.last_answer_wins",
    "agent_protocol": "agent.protocol", "step_timeout": "agent.step_timeout_s",
}


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="sample and grade a suite; writes a run directory")
    p.add_argument("--config", type=Path, help="TOML config (flags override it)")
    p.add_argument("--suite", help="smoke | humaneval | humanevalplus | path/to/suite.toml")
    p.add_argument("--data", help="task data file overriding the suite's (JSONL, .gz ok)")
    p.add_argument("-n", "--samples", type=int, help="samples per task")
    p.add_argument("--limit", type=int, help="only the first K tasks")
    p.add_argument("--tasks", help="comma-separated task ids")
    p.add_argument("--runs-dir", help="where run directories are created (default: runs)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run")
    g = p.add_argument_group("strategies (sequential revision vs parallel sampling)")
    g.add_argument("--splits", help="comma-separated N:M splits (N chains × up to M turns) and agent:NxM "
                                    "(N agent episodes × up to M steps), e.g. 8:1,2:4,1:8,agent:2x4")
    g.add_argument("--budget", type=int, help="per task and strategy, in --budget-unit")
    g.add_argument("--budget-unit", choices=("generations", "tokens"))
    g.add_argument("--feedback-chars", type=int, help="cap on one feedback message (default 1200)")
    g.add_argument("--adaptive", action="store_true", default=None,
                   help="also run adaptive allocation: a probe per task picks its split")
    g.add_argument("--adaptive-table", metavar="COMPARE_JSON", help="a previous run's compare.json (or run dir)")
    g.add_argument("--probe", type=int, help="adaptive: probe samples per task (default 2)")
    g.add_argument("--scorer", choices=("none", "self", "reward"),
                   help="math: score attempts for weighted voting and best-of-n ([scorer] table for reward models)")
    g.add_argument("--last-answer-wins", action="store_true", default=None,
                   help="math: grade a reply that states several different final answers by its last one "
                        "(default: it fails as hedging)")
    g.add_argument("--agent-protocol", choices=("text", "tools"),
                   help="agent episodes: one ```bash block per reply (text, default) or OpenAI tool calls (tools)")
    g.add_argument("--step-timeout", type=float, help="agent episodes: seconds one action may run (default 10)")
    m = p.add_argument_group("model")
    m.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    m.add_argument("--model", help="served model name")
    m.add_argument("--api-key")
    m.add_argument("--concurrency", type=int, help="requests in flight (default 64)")
    m.add_argument("--samples-per-request", type=int, help="largest n per request (default 16)")
    m.add_argument("--request-timeout", type=float, help="per-request timeout in seconds")
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--stop", action="append", help="stop string (repeatable)")
    s.add_argument("--extra-body", type=_json_object, help='vLLM extras as JSON, e.g. \'{"top_k": 20}\'')
    b = p.add_argument_group("sandbox")
    b.add_argument("--pool-size", type=int, help="warm containers (default: CPU count)")
    b.add_argument("--image", help="sandbox image tag")


def _export_parser(sub: Any) -> None:
    from agentloop.export.pipeline import DEDUP, FORMATS, SHAPES, VERIFIED_BY

    p = sub.add_parser("export", help="verified attempts of run dirs as fine-tuning JSONL (SFT, DPO, OpenAI)")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="one or more run dirs, merged")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="train JSONL; val, stats (and metadata) beside it")
    p.add_argument("--format", choices=FORMATS, default="sft",
                   help="sft: TRL messages; dpo: TRL prompt/chosen/rejected; "
                        "openai / openai-dpo: OpenAI fine-tuning JSONL")
    p.add_argument("--shape", choices=SHAPES, default="final",
                   help="SFT: final answer only, or the whole revision chain")
    p.add_argument("--verified-by", choices=VERIFIED_BY, default="grading",
                   help="feedback: trust the feedback tests (suites without hidden tests); math uses the reference")
    p.add_argument("--dedup", choices=DEDUP, default="code",
                   help="code: AST-normalized code, canonical answer for math (default); text: the reply; none")
    p.add_argument("--max-per-task", type=int, metavar="K", help="SFT: at most K records per task")
    p.add_argument("--pairs-per-task", type=int, default=1, metavar="K", help="DPO: pairs per task (default 1)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="share of task ids held out for validation (<stem>.val.jsonl)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the split (default 0)")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="tokenizer (local name or path) for the token counts; 'usage': the server's numbers")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    p = sub.add_parser("grade", help="grade completions made elsewhere (evalplus-style JSONL) into a run dir")
    p.add_argument("samples", type=Path, help="JSONL rows: task_id + completion or solution")
    p.add_argument("--suite", required=True, help="the suite the task ids belong to")
    p.add_argument("--data", help="task data file overriding the suite's")
    p.add_argument("--runs-dir", help="where the run directory is created (default: runs)")
    p.add_argument("--pool-size", type=int, help="warm containers (default: CPU count)")
    p.add_argument("--image", help="sandbox image tag")
    p = sub.add_parser("report", help="pass@k of a run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = sub.add_parser("compare", help="strategies of a run at equal compute: curves, difficulty bins, compute-optimal")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--bins", type=int, default=5, help="difficulty bins (default 5)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds over tasks (default 5)")
    p.add_argument("--probe", type=int, default=2, help="turn-0 chains per task in the feedback probe (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of chain orders, folds and bootstrap (default 0)")
    _export_parser(sub)
    p = sub.add_parser("serve", help="start a local vLLM OpenAI-compatible server")
    p.add_argument("--model", help="model dir or name (default: SmolLM2-135M-Instruct on CPU)")
    p.add_argument("--served-model-name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--python", help="interpreter that has vLLM (default: this one)")
    p.add_argument("--tool-call-parser", metavar="NAME",
                   help="vLLM tool-call parser for agent episodes' tools protocol: auto (from the model name, "
                        "default), none, or a parser name (hermes, llama3_json, mistral, ...)")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="extra vLLM flags after --")
    sb = sub.add_parser("sandbox", help="the Docker sandbox").add_subparsers(dest="sandbox_command", required=True)
    p = sb.add_parser("build", help="build the sandbox image (Dockerfile, else offline debootstrap)")
    p.add_argument("--tag", help="image tag")
    p = sb.add_parser("exec", help="run one Python file in a sandbox; prints the verdict as JSON")
    p.add_argument("file", type=Path)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--image", help="sandbox image tag")
    p = sb.add_parser("gc", help="remove sandbox containers of dead runs")
    p.add_argument("--all", action="store_true", help="remove every agentloop container, live runs too")
    return parser


def _config_from_args(args: argparse.Namespace, fields: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """The config file with the given flags applied, validated; and what the user set explicitly
    (dotted field -> value, from the file's keys and the flags), which is what `--resume` compares."""
    from agentloop.config import RunConfig, from_mapping, get_field, read_toml, set_field, validate

    config_path = getattr(args, "config", None)
    raw = read_toml(config_path) if config_path else {}
    cfg = from_mapping(RunConfig, raw, str(config_path))
    explicit = [f"{k}.{k2}" for k, v in raw.items() if isinstance(v, dict) for k2 in v]
    explicit += [k for k, v in raw.items() if not isinstance(v, dict)]
    flags: dict[str, str] = {}
    for dest, name in fields.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest in ("tasks", "splits"):
            value = [t.strip() for t in value.split(",") if t.strip()] or None
        cfg = set_field(cfg, name, value)
        flags[name] = "--" + dest.replace("_", "-")
    validate(cfg, str(config_path or "config"), flags)
    return cfg, {name: get_field(cfg, name) for name in [*explicit, *flags]}


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from agentloop.report import print_report
    from agentloop.runner import run

    cfg, explicit = _config_from_args(args, FLAG_FIELDS)
    report = anyio.run(partial(run, cfg, args.resume, console, changes=explicit))
    print_report(report, Console())
    print(f"run dir: {report.run_dir}")
    return 0


def _cmd_grade(args: argparse.Namespace, console: Console) -> int:
    from agentloop.grade import grade_file
    from agentloop.report import print_report

    fields = {k: FLAG_FIELDS[k] for k in ("suite", "data", "runs_dir", "pool_size", "image")}
    cfg, _ = _config_from_args(args, fields)
    report = anyio.run(grade_file, cfg, args.samples, console)
    print_report(report, Console())
    print(f"run dir: {report.run_dir}")
    return 0


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from agentloop.report import PNG_NAME, build_report, print_report, write_png

    report = build_report(args.run_dir)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, Console())
    if png := write_png(report, args.run_dir / PNG_NAME):
        console.print(f"plot: {png}")
    return 0


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from agentloop.compare import build_comparison, print_comparison, write_json, write_pngs

    c = build_comparison(args.run_dir, bins=args.bins, folds=args.folds, probe=args.probe, seed=args.seed)
    if args.json:
        print(json.dumps(c.to_json(), indent=1))
    else:
        print_comparison(c, Console())
    sys.stdout.flush()  # the tables before the paths (stderr) in a terminal
    for path in [write_json(c, args.run_dir), *write_pngs(c, args.run_dir)]:
        console.print(f"wrote: {path}", markup=False, highlight=False)
    return 0


def _cmd_export(args: argparse.Namespace, console: Console) -> int:
    from agentloop.export import ExportOptions, export_runs

    options = ExportOptions(format=args.format, shape=args.shape, verified_by=args.verified_by, dedup=args.dedup,
                            max_per_task=args.max_per_task, pairs_per_task=args.pairs_per_task,
                            val_fraction=args.val_fraction, seed=args.seed, tokenizer=args.tokenizer)
    stats = export_runs(args.run_dirs, args.out, options, console)
    for path in stats.files:
        console.print(f"wrote: {path}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from agentloop.serve import ServeConfig, serve_forever

    extra = [a for a in args.vllm_args if a != "--"]
    given = {"served_model_name": args.served_model_name, "python": args.python,
             "tool_call_parser": args.tool_call_parser}
    cfg = ServeConfig(model=args.model, host=args.host, port=args.port, extra_args=extra,
                      **{k: v for k, v in given.items() if v})
    anyio.run(serve_forever, cfg)
    return 0


def _cmd_sandbox(args: argparse.Namespace, console: Console) -> int:
    from agentloop.config import override
    from agentloop.sandbox import SandboxConfig, build_image, exec_file, gc

    if args.sandbox_command == "build":
        print(build_image(args.tag) if args.tag else build_image())
    elif args.sandbox_command == "exec":
        cfg = override(SandboxConfig(), image=args.image, pool_size=1)
        result = anyio.run(exec_file, args.file, args.timeout, cfg)
        print(json.dumps(result.to_json()))
    else:
        print(f"removed {gc(all_runs=args.all)} container(s)")
    return 0


COMMANDS = {"run": _cmd_run, "grade": _cmd_grade, "report": _cmd_report, "compare": _cmd_compare, "export": _cmd_export,
            "serve": _cmd_serve, "sandbox": _cmd_sandbox}


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside `exc`, with (nested) exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def user_error(exc: BaseException) -> AgentloopError | KeyboardInterrupt | None:
    """What the CLI boundary reports for `exc`. Task groups wrap what their tasks raise in
    ExceptionGroups, nested one per group; unwrapped, a group whose every leaf is an
    AgentloopError is that (first) error: one line and exit 2. A group with a KeyboardInterrupt
    among such leaves is the interrupt (exit 130). Anything else is a bug: None, and the traceback
    goes through."""
    leaves = list(_leaves(exc))
    known = [e for e in leaves if isinstance(e, (AgentloopError, KeyboardInterrupt))]
    if len(known) < len(leaves):
        return None
    return next((e for e in known if isinstance(e, KeyboardInterrupt)), known[0] if known else None)


def main(argv: list[str] | None = None) -> int:
    console = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, console)
    except (AgentloopError, KeyboardInterrupt, BaseExceptionGroup) as e:
        error = user_error(e)
        if error is None:
            raise
        if isinstance(error, KeyboardInterrupt):
            print("agentloop: interrupted", file=sys.stderr)
            return 130
        print(f"agentloop: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
