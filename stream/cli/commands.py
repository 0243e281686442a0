"""Subcommands of `segstream`: argument wiring and one thin function each."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeAlias, TypeVar

import orjson
from confluent_kafka import Producer

from features.events import parse_timestamp
from stream.errors import ConfigError, SegstreamError
from stream.settings import Settings, producer_config

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Result = TypeVar("Result")


def print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def stop_on_signals(stop: Callable[[str], None]) -> None:
    """SIGTERM and SIGINT only ask the loop to stop; it commits and returns."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        msg = f"no such file: {text}"
        raise argparse.ArgumentTypeError(msg)
    return path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be >= 1, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        msg = f"must be > 0, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _iso_date_ms(text: str) -> int:
    ms = parse_timestamp(text)
    if ms is None:
        msg = f"not an ISO-8601 time: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return ms


def register_run(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="the service: consume, apply, publish")
    p.add_argument("--max-events", type=_positive_int, help="stop after N records")
    p.add_argument("--until-idle", type=_positive_float, metavar="SECONDS",
                   help="stop after SECONDS without a record")  # fmt: skip
    p.set_defaults(command=cmd_run)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from stream.kafka.loop import Loop
    from stream.ops.health import serve
    from stream.service.wiring import build_handler, health_for

    health = health_for(settings)
    server = serve(health, settings.metrics.port, settings.metrics.host)
    handler = build_handler(settings)
    loop = Loop(settings, handler, health)
    stop_on_signals(loop.stop)
    try:
        summary = loop.run(max_events=args.max_events, until_idle=args.until_idle)
    finally:
        handler.close()
        if server is not None:
            server.shutdown()
    print_json({**summary.as_dict(), "model_version": handler.sync.params.version})
    return 0 if summary.clean_exit else 3


def register_recover(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "recover",
        parents=[common],
        help="after the service stopped on lost state: rebuild or go on, under a new epoch",
        description=(
            "The service stops when Redis lost its state (restarted empty, flushed, restored"
            " from an older backup) or the events topic was recreated. Stop every instance of"
            " the group, then choose: --from-earliest drops the derived state and re-folds"
            " everything the topic still holds; --from-committed keeps what Redis holds and"
            " goes on from the committed offsets (what was lost stays lost). Either way change"
            " ids carry a new epoch, so none is reused."
        ),
    )
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--from-earliest", action="store_true",
                     help="drop the derived state, re-fold the topic from its start")  # fmt: skip
    how.add_argument("--from-committed", action="store_true",
                     help="keep the state and the committed offsets")  # fmt: skip
    p.set_defaults(command=cmd_recover)


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.recover import recover

    print_json(recover(settings, from_earliest=args.from_earliest).as_dict())
    return 0


def register_generate(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="synthetic events from personas")
    p.add_argument("--users", type=_positive_int, default=1000)
    p.add_argument("--days", type=_positive_float, default=30.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start", type=_iso_date_ms, default=None,
                   help="first event time, ISO-8601 (default 2026-01-01T00:00:00Z)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("events.jsonl"),
                   help="JSONL output (.gz to compress)")  # fmt: skip
    p.add_argument("--personas", type=Path, default=Path("personas.csv"),
                   help="CSV of user_id,persona (ground truth, never in the events)")  # fmt: skip
    p.set_defaults(command=cmd_generate)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from stream.tools.generate import generate
    from stream.tools.progress import Progress

    progress = Progress("generate")
    summary = generate(
        args.users,
        args.days,
        args.seed,
        args.out,
        args.personas,
        start_ms=args.start,
        progress=progress,
    )
    progress.close()
    print_json(summary.__dict__)
    return 0


def register_replay(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replay", parents=[common], help="a JSONL/CSV file into the events topic")
    p.add_argument("path", type=existing_file, help="JSONL or CSV, optionally .gz")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive_float, help="events per second")
    pace.add_argument("--speed", type=_positive_float,
                      help="keep the gaps between event times, divided by X")  # fmt: skip
    pace.add_argument("--unpaced", action="store_true", help="as fast as possible (default)")
    p.add_argument("--dry-run", action="store_true", help="read and count, send nothing")
    p.set_defaults(command=cmd_replay)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from stream.kafka.topics import ensure_topics
    from stream.tools.progress import Progress
    from stream.tools.replay import Pacing, iter_records, open_text, replay

    producer = None
    if not args.dry_run:
        if settings.topics.create:
            ensure_topics(settings)
        producer = Producer(producer_config(settings))
    stream, raw_read = open_text(args.path)
    progress = Progress("replay", args.path.stat().st_size, raw_read)
    with stream:
        summary = replay(
            iter_records(stream, args.path),
            producer,
            settings.topics.events,
            Pacing(rate=args.rate, speed=args.speed),
            progress,
        )
    progress.close()
    if producer is not None:
        producer.close()
    print_json({"topic": settings.topics.events, "dry_run": args.dry_run, **summary.as_dict()})
    return 1 if summary.errors else 0


def register_demo(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="generate, replay and run on a local stack")
    p.add_argument("--users", type=_positive_int, default=3000)
    p.add_argument("--days", type=_positive_float, default=30.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", type=Path, default=Path(".demo"))
    p.set_defaults(command=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from stream.tools.demo import run_demo

    return run_demo(settings, users=args.users, days=args.days, seed=args.seed,
                    workdir=args.workdir)  # fmt: skip


def register_bench(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bench", parents=[common], help="throughput and latency figures as JSON")
    p.add_argument("--events", type=_positive_int, default=200_000)
    p.add_argument("--users", type=_positive_int, default=50_000,
                   help="distinct users the events are spread over")  # fmt: skip
    p.add_argument("--latency-rate", type=_positive_float, default=5000.0,
                   help="offered events/s for the latency run")  # fmt: skip
    p.add_argument("--latency-seconds", type=_positive_float, default=5.0)
    p.add_argument("--workdir", type=Path, default=Path(".bench"))
    p.add_argument("--redis-cluster", action="store_true",
                   help="run on a Redis Cluster: the configured one (SEGSTREAM_REDIS__CLUSTER),"
                        " else 3 local primaries")  # fmt: skip
    p.add_argument("--processes", type=_positive_int, default=1,
                   help="also run the worst case in this many processes of a group")  # fmt: skip
    p.set_defaults(command=cmd_bench)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from stream.tools.bench import run_bench

    print_json(run_bench(settings, events=args.events, users=args.users,
                         latency_rate=args.latency_rate,
                         latency_seconds=args.latency_seconds, workdir=args.workdir,
                         cluster=args.redis_cluster, processes=args.processes))  # fmt: skip
    return 0


def register_evaluate(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="the service's step over a file: segments against personas, propensity, report",
        description=(
            "Runs the service's own batch step over a file of events (generated when none is"
            " given) against a local or configured Redis, then scores the segments against the"
            " generator's personas and the propensity on held-out labels. With --transactions,"
            " replays a purchase log up to a split date and compares the service's propensity"
            " with RFM quintiles and BG/NBD on who bought after it."
        ),
    )
    p.add_argument("--events", type=Path, help="JSONL/CSV (gzip too); default: generate")
    p.add_argument("--personas", type=Path, help="user_id,persona CSV of the events")
    p.add_argument("--users", type=_positive_int, default=20_000,
                   help="users to generate when --events is not given")  # fmt: skip
    p.add_argument("--days", type=_positive_float, default=60.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--holdout", type=float, default=0.3,
                   help="last share of event time held out for propensity metrics")  # fmt: skip
    p.add_argument("--transactions", type=existing_file, metavar="CSV",
                   help="a purchase log (customer, date, amount), gzip too")  # fmt: skip
    p.add_argument("--split", type=_iso_date_ms, metavar="DATE",
                   help="first day of the holdout (default: by --holdout)")  # fmt: skip
    p.add_argument("--columns", type=_three_names, metavar="CUSTOMER,DATE,AMOUNT",
                   help="the log's column names (default: found by name)")  # fmt: skip
    p.add_argument("--report", type=Path, default=Path(".evaluate/report"))
    p.set_defaults(command=cmd_evaluate)


def _three_names(text: str) -> tuple[str, str, str]:
    names = [part.strip() for part in text.split(",")]
    if len(names) != 3 or not all(names):
        msg = f"expected CUSTOMER,DATE,AMOUNT, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return names[0], names[1], names[2]


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    if not 0.0 < args.holdout < 1.0:
        msg = f"--holdout must be between 0 and 1, got {args.holdout}"
        raise ConfigError(msg)
    if args.transactions is not None:
        return _evaluate_transactions(args, settings)
    from stream.tools.evaluate import EvaluateOptions, evaluate
    from stream.tools.generate import generate
    from stream.tools.progress import Progress
    from stream.tools.report import write_report

    if (args.events is None) != (args.personas is None):
        msg = "--events and --personas go together (give both, or neither to generate)"
        raise ConfigError(msg)
    events, personas = args.events, args.personas
    if events is None:
        events, personas = args.report.parent / "events.jsonl", args.report.parent / "personas.csv"
        progress = Progress("generate")
        generate(args.users, args.days, args.seed, events, personas, progress=progress)
        progress.close()
    progress = Progress("evaluate")
    evaluation = evaluate(
        events,
        personas,
        settings,
        EvaluateOptions(holdout=args.holdout),
        workdir=args.report.parent,
        progress=progress,
    )
    progress.close()
    path = write_report(args.report, evaluation)
    print_json({**evaluation.as_dict(), "report": str(path)})
    return 0


def _evaluate_transactions(args: argparse.Namespace, settings: Settings) -> int:
    from stream.tools.evaluate import TransactionsOptions, evaluate_transactions
    from stream.tools.progress import Progress

    if args.events is not None or args.personas is not None:
        msg = "--transactions replaces --events and --personas"
        raise ConfigError(msg)
    progress = Progress("evaluate")
    options = TransactionsOptions(split_ms=args.split, holdout=args.holdout, columns=args.columns)
    figures = evaluate_transactions(
        args.transactions, settings, options, workdir=args.report.parent, progress=progress
    )
    progress.close()
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "transactions.json").write_bytes(
        orjson.dumps(figures, option=orjson.OPT_INDENT_2)
    )
    print_json(figures)
    return 0


def register_profile(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("profile", parents=[common], help="users' current profiles as JSON lines")
    p.add_argument("users", nargs="*", metavar="USER", help="user ids as sent in the events")
    p.add_argument("--all", action="store_true", help="every stored user, one JSON line each")
    p.set_defaults(command=cmd_profile)


def cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.profiles import print_profiles

    if bool(args.users) == args.all:
        msg = "give USER ids or --all"
        raise ValueError(msg)
    return print_profiles(settings, None if args.all else args.users)


def register_forget(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("forget", parents=[common], help="erase users: keys, tombstones, no return")
    p.add_argument("users", nargs="+", metavar="USER", help="user ids as sent in the events")
    p.set_defaults(command=cmd_forget)


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.profiles import forget_users

    for line in forget_users(settings, args.users):
        print_json(line)
    return 0


def register_check(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="health probe of a running service: exit 0 when live (--ready: ready)",
    )
    p.add_argument("--ready", action="store_true",
                   help="readiness (Kafka and Redis reachable) instead of liveness")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="where the service listens")
    p.add_argument("--timeout", type=_positive_float, default=3.0, metavar="SECONDS")
    p.set_defaults(command=cmd_check)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from stream.ops.probe import probe

    ok, answer = probe(args.host, settings.metrics.port, ready=args.ready, timeout_s=args.timeout)
    print_json(answer)
    return 0 if ok else 1


def register_model(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("model", parents=[common], help="the shared model: show it, or reset it")
    actions = p.add_subparsers(dest="model_action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        parents=[common],
        help="version, samples learned, quality, and the settings it was built with (JSON)",
    )
    show.set_defaults(command=cmd_model_show)
    reset = actions.add_parser(
        "reset",
        parents=[common],
        help="delete the model (stop every instance first); the next run learns a new one",
    )
    reset.add_argument("--yes", action="store_true", help="really delete it")
    reset.set_defaults(command=cmd_model_reset)


def cmd_model_show(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.model import show_model

    print_json(show_model(settings))
    return 0


def cmd_model_reset(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.model import reset_model

    if not args.yes:
        msg = "model reset deletes the shared model and every instance learns anew: add --yes"
        raise ConfigError(msg)
    print_json(reset_model(settings))
    return 0


def register_rules(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rules",
        parents=[common],
        help="cross-sell rules of the current model as JSON, best first",
        description=(
            "Rules 'antecedent -> consequent' with support, confidence and lift, counted in"
            " the stream over baskets (a session's cart and orders). Items are product ids and"
            " category:<name>."
        ),
    )
    p.add_argument("item", nargs="?", metavar="ITEM", help="the antecedent (default: every item)")
    p.add_argument("--top", type=_positive_int, default=10, metavar="N", help="at most N rules")
    p.set_defaults(command=cmd_rules)


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin.rules import rules

    for rule in rules(settings, args.item, args.top):
        print_json(rule)
    return 0


def register_audience(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audience",
        parents=[common],
        help="audiences defined at runtime: add, list, show, remove, preview",
        description=(
            "An audience is a named condition over the features, segment, cluster, propensity"
            " and categories, e.g. \"propensity > 0.6 and 'books' in top_categories\". Running"
            " instances follow a change within seconds, backfill the existing users and publish"
            " every enter and leave on the segments topic."
        ),
    )
    actions = p.add_subparsers(dest="audience_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="add an audience; it is backfilled")
    add.add_argument("name")
    add.add_argument("condition")
    add.add_argument("--wait", type=_positive_float, metavar="SECONDS",
                     help="wait up to SECONDS for the backfill, showing progress")  # fmt: skip
    add.set_defaults(command=cmd_audience_add)
    remove = actions.add_parser("remove", parents=[common], help="remove; members' leaves go out")
    remove.add_argument("name")
    remove.add_argument("--wait", type=_positive_float, metavar="SECONDS",
                        help="wait up to SECONDS for the leaves, showing progress")  # fmt: skip
    remove.set_defaults(command=cmd_audience_remove)
    listing = actions.add_parser("list", parents=[common], help="every audience with its size")
    listing.set_defaults(command=cmd_audience_list)
    show = actions.add_parser("show", parents=[common], help="one audience and its backfill")
    show.add_argument("name")
    show.set_defaults(command=cmd_audience_show)
    preview = actions.add_parser(
        "preview", parents=[common], help="estimate a condition's size from a sample of users"
    )
    preview.add_argument("condition")
    preview.add_argument("--sample", type=_positive_int, default=2_000,
                         help="users sampled (default 2000)")  # fmt: skip
    preview.set_defaults(command=cmd_audience_preview)


def _audience_call(call: Callable[[], Result]) -> Result:
    """A bad name or condition is a bad argument (exit 2), named in the message; an audience
    that is not there is a failure (exit 1), as an unknown user is for `profile`."""
    from segments.audiences import AudienceError, UnknownAudienceError

    try:
        return call()
    except UnknownAudienceError as exc:
        raise SegstreamError(str(exc)) from None
    except AudienceError as exc:
        raise ConfigError(str(exc)) from None


def cmd_audience_add(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin import audiences

    result = _audience_call(lambda: audiences.add(settings, args.name, args.condition))
    return _waited(args, settings, result)


def cmd_audience_remove(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin import audiences

    result = _audience_call(lambda: audiences.remove(settings, args.name))
    return _waited(args, settings, result)


def _waited(args: argparse.Namespace, settings: Settings, result: dict[str, Any]) -> int:
    """Print the change; with --wait, after the backfill's progress, exit 1 if it did not end
    in time (is the service running?)."""
    from stream.admin import audiences

    if not args.wait:
        print_json(result)
        return 0
    result["backfill"] = audiences.wait_backfill(settings, result["catalog_version"], args.wait)
    print_json(result)
    if result["backfill"]["complete"]:
        return 0
    print(
        f"segstream audience: the backfill did not end within {args.wait:g}s; the running"
        " service goes on with it (see `segstream audience show`). Is the service running?",
        file=sys.stderr,
    )
    return 1


def cmd_audience_list(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin import audiences

    print_json(audiences.listing(settings))
    return 0


def cmd_audience_show(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin import audiences

    found = audiences.show(settings, args.name)
    if found is None:
        print(f"segstream audience: no audience {args.name!r}", file=sys.stderr)
        return 1
    print_json(found)
    return 0


def cmd_audience_preview(args: argparse.Namespace, settings: Settings) -> int:
    from stream.admin import audiences

    print_json(_audience_call(lambda: audiences.preview(settings, args.condition, args.sample)))
    return 0


REGISTRY: list[Callable[[Subparsers, argparse.ArgumentParser], None]] = [
    register_run,
    register_recover,
    register_generate,
    register_replay,
    register_profile,
    register_forget,
    register_demo,
    register_bench,
    register_evaluate,
    register_model,
    register_rules,
    register_audience,
    register_check,
]
