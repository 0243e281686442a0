"""The fault suite's harness: servers of its own, the real service as processes, the checks.

A fault test starts a Redis and a broker that belong to it alone (it may kill, freeze or restart
them), feeds the events topic, runs `segstream run` processes, waits on conditions (committed
offsets, a metric, a log line) and ends with `verify`: every user's profile equals the reference
fold of the accepted input, every invalid or late record is in the DLQ with its reason, no change
id carries two payloads and no user's change sequence has a gap.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from features import resp
from features.events import Event, decode_event
from features.reference import Arrival, Reference
from stream.admin.profiles import all_profiles
from stream.kafka.dead_letters import origin_of
from stream.kafka.topics import ensure_topics
from stream.service.wiring import redis_client
from stream.settings import Settings, load_settings
from stream.tools.generate import generate
from stream.tools.local_servers import LocalCluster, LocalServer, free_port
from tests.cli_tools import env_for, segstream
from tests.conftest import SIGNING_KEY
from tests.faults.proxy import RedisProxy
from tests.kafka_tools import changes_of, committed, drain, end_offsets, produce
from tests.stream.service.test_segments_e2e import populations, truth

PARTITIONS = 3
# Polling interval of every wait: conditions are checked, never slept on.
POLL_S = 0.1

# The service as the fault tests run it: small batches and frequent checkpoints, so a fault
# lands between many batches; short backoff, so it resumes soon after a fault ends; models
# published every second, so snapshots are written while faults land.
SERVICE_ENV = {
    "SEGSTREAM_LOOP__BATCH_SIZE": "100",
    "SEGSTREAM_LOOP__COMMIT_INTERVAL_S": "0.2",
    "SEGSTREAM_LOOP__BACKOFF_INITIAL_S": "0.05",
    "SEGSTREAM_LOOP__BACKOFF_MAX_S": "0.5",
    "SEGSTREAM_SEGMENTS__SNAPSHOT_INTERVAL_S": "1",
    "SEGSTREAM_SEGMENTS__REFRESH_INTERVAL_S": "0.5",
    "SEGSTREAM_METRICS__HOST": "127.0.0.1",
}


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 60.0,
    alive: Iterable[Service] = (),
) -> None:
    """Poll `condition`; fail with `what` after `timeout_s`, or at once if a service died."""
    watched = list(alive)
    deadline = time.monotonic() + timeout_s
    while not condition():
        for service in watched:
            service.assert_running()
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {each.name} ---\n{each.log_tail()}" for each in watched)
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{tails}")
        time.sleep(POLL_S)


def keep_for(seconds: float, alive: Iterable[Service]) -> None:
    """Hold a fault on for `seconds` (the fault's length is the point, not a wait for a
    condition), failing at once if a service dies meanwhile."""
    watched = list(alive)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for service in watched:
            service.assert_running()
        time.sleep(POLL_S)


@contextmanager
def frozen(server: LocalServer) -> Iterator[None]:
    """SIGSTOP the server for the block; SIGCONT whatever happens."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


# -- input -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record to send: `reason` is the DLQ reason the contract gives it (None: valid)."""

    key: bytes | None
    value: bytes | None
    reason: str | None = None


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    record: Record


def generated(workdir: Path, users: int, days: float, seed: int) -> list[bytes]:
    """What `segstream generate` writes: JSON lines in event-time order."""
    out = workdir / f"events-{users}-{days}-{seed}.jsonl"
    if not out.exists():
        generate(users, days, seed, out, workdir / f"personas-{users}-{days}-{seed}.csv")
    return out.read_bytes().splitlines()


def keyed(lines: Iterable[bytes]) -> list[Record]:
    """Valid events keyed by their user, as the replay tool sends them."""
    return [Record(orjson.loads(line)["user_id"].encode(), line) for line in lines]


class Feed:
    """Records produced into the events topic, and where each one landed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.sent: list[Sent] = []
        # The producer's largest record; raised by a test that sends one past a broker's default.
        self.max_bytes = 1_000_000
        self._lock = threading.Lock()

    def send(self, records: Sequence[Record]) -> None:
        # kafka_tools.produce passes values through to the client, which sends None as a null
        # record: a tombstone on the input topic is one more thing the contract must reject.
        pairs: list[tuple[bytes | None, bytes]] = [(r.key, r.value) for r in records]  # type: ignore[misc]
        placed = produce(self.bootstrap, self.topic, pairs, max_bytes=self.max_bytes)
        with self._lock:
            self.sent += [Sent(p, o, r) for (p, o), r in zip(placed, records, strict=True)]

    def send_over(self, records: Sequence[Record], seconds: float, chunks: int = 30) -> Feeder:
        """Send `records` in `chunks` spread over `seconds`, in a thread: live traffic."""
        feeder = Feeder(self, records, seconds, chunks)
        feeder.start()
        return feeder

    def ends(self) -> dict[int, int]:
        with self._lock:
            return end_offsets([(s.partition, s.offset) for s in self.sent])


class Feeder(threading.Thread):
    def __init__(self, feed: Feed, records: Sequence[Record], seconds: float, chunks: int) -> None:
        super().__init__(daemon=True, name="feeder")
        self._feed = feed
        self._records = records
        self._pause_s = seconds / chunks
        self._size = max(1, -(-len(records) // chunks))
        self._flowing = threading.Event()
        self._flowing.set()
        self._sending = threading.Lock()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self._records), self._size):
                self._flowing.wait()
                with self._sending:
                    self._feed.send(self._records[start : start + self._size])
                time.sleep(self._pause_s)  # pacing of the traffic, not a wait for a condition
        except BaseException as exc:  # re-raised by finish() in the test's thread
            self.error = exc

    def hold(self) -> None:
        """Stop sending (returns once no chunk is in flight): the test's own producer must not
        be caught in a fault meant for the service."""
        self._flowing.clear()
        with self._sending:
            pass

    def release(self) -> None:
        self._flowing.set()

    def finish(self, timeout_s: float = 120.0) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise self.error


# -- the service -------------------------------------------------------------------------------


class Service:
    """One `segstream run` process: its log, its JSON summary and its /metrics."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str, *args: str) -> None:
        self._env = env
        self._workdir = workdir
        self.name = name
        self._args = args
        self._starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.out_path = self.log_path = workdir / f"{name}.log"

    def start(self) -> Service:
        self._starts += 1
        self.port = free_port()
        stem = f"{self.name}-{self._starts}"
        self.out_path = self._workdir / f"{stem}.out"
        self.log_path = self._workdir / f"{stem}.log"
        env = {**self._env, "SEGSTREAM_METRICS__PORT": str(self.port)}
        argv = segstream("run", "--log-level", "INFO", *self._args)
        with self.out_path.open("wb") as out, self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=log)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
            )

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or committed."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(30)

    def stop(self, timeout_s: float = 90.0) -> dict[str, Any]:
        """SIGTERM: the service finishes its batch, commits and prints its summary."""
        if self.running():
            self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 120.0) -> dict[str, Any]:
        assert self.process is not None
        code = self.process.wait(timeout_s)
        assert code == 0, f"{self.name} exited with {code}: {self.log_tail()}"
        summary: dict[str, Any] = orjson.loads(self.out_path.read_bytes())
        return summary

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def logged(self, pattern: str) -> bool:
        return re.search(pattern, self.log_text()) is not None

    def metrics(self, timeout_s: float = 2.0) -> dict[str, float]:
        """Every sample of /metrics, keyed `name{label="value",...}` (labels sorted), or {}
        while the endpoint does not answer (starting, frozen)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample_key(sample.name, sample.labels)] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample's value (summed over the labels not given), None if it does not exist."""
        found = [
            value
            for key, value in self.metrics().items()
            if key.split("{", 1)[0] == name and _has_labels(key, labels)
        ]
        return sum(found) if found else None


# The metrics that say where a stuck service stands.
TELLING = (
    "segstream_events_consumed_total",
    "segstream_events_processed_total",
    "segstream_assigned_partitions",
    "segstream_paused",
    "segstream_partitions_held_back",
    "segstream_consumer_lag_records",
    "segstream_retries_total",
    "segstream_redis_errors_total",
    "segstream_writes_refused_total",
)


def _telling(key: str) -> bool:
    return key.split("{", 1)[0] in TELLING


def sample_key(name: str, labels: dict[str, str]) -> str:
    inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inside}}}" if inside else name


def _has_labels(key: str, labels: dict[str, str]) -> bool:
    return all(f'{k}="{v}"' in key for k, v in labels.items())


# -- one test's world --------------------------------------------------------------------------


@dataclass
class Rig:
    """A fault test's own servers, topics, feed and services."""

    workdir: Path
    names: str
    redis: LocalServer
    kafka: LocalServer
    # When set, the service reaches Redis through it (the checks never do).
    proxy: RedisProxy | None = None
    # When set, Redis is this cluster (`redis` is one of its nodes).
    cluster: LocalCluster | None = None
    services: list[Service] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.service_redis_url = self.proxy.address if self.proxy else self.redis.address
        self.settings = self._settings()
        ensure_topics(self.settings)
        self.feed = Feed(self.kafka.address, self.settings.topics.events)

    def _settings(self) -> Settings:
        """Settings of the checks: the real Redis, never the proxy."""
        names = self.names
        return load_settings(
            {
                "kafka": {
                    "bootstrap_servers": self.kafka.address,
                    "group_id": f"{names}-group",
                    "session_timeout_ms": 6000,
                },
                "redis": {"url": self.redis.address, "cluster": self.cluster is not None},
                "topics": {
                    "events": f"{names}.events",
                    "segments": f"{names}.segments",
                    "dlq": f"{names}.dlq",
                    "partitions": PARTITIONS,
                },
                "metrics": {"port": 0},
                "segments": {"signing_key": SIGNING_KEY, "warmup": 50},
                "key_prefix": names,
            }
        )

    @property
    def bootstrap(self) -> str:
        return self.kafka.address

    def client(self) -> resp.Client:
        return redis_client(self.settings)

    def env(self, **extra: str) -> dict[str, str]:
        env = {**env_for(self.settings), **SERVICE_ENV, **extra}
        env["SEGSTREAM_REDIS__URL"] = self.service_redis_url
        return env

    def service(self, name: str = "service", *args: str, **env: str) -> Service:
        """A service process (not started); stopped at the end of the test whatever happens."""
        made = Service(self.env(**env), self.workdir, name, *args)
        self.services.append(made)
        return made

    def stop(self, service: Service) -> dict[str, Any]:
        """SIGTERM, and keep its summary for `verify`."""
        summary = service.stop()
        self.summaries.append(summary)
        return summary

    def committed(self) -> dict[int, int]:
        return committed(self.bootstrap, self.settings.kafka.group_id, self.feed.topic, PARTITIONS)

    def drained(self) -> bool:
        """Every record sent is committed by the group."""
        return self.committed() == self.feed.ends()

    def wait_drained(self, alive: Iterable[Service], timeout_s: float = 90.0) -> None:
        services = list(alive)
        try:
            wait_until(self.drained, "the group to commit every record sent", timeout_s, services)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe(services)}") from None

    def describe(self, services: Iterable[Service]) -> str:
        """Where the group stands, for a failure message: offsets and each service's view."""
        lines = [f"committed {self.committed()}, ends {self.feed.ends()}"]
        for service in services:
            seen = {k: v for k, v in service.metrics().items() if _telling(k)}
            lines.append(f"{service.name} (pid {service.pid}): {seen}")
            lines.append(f"{service.name} log tail:\n{service.log_tail(1500)}")
        return "\n".join(lines)

    def wait_consuming(self, service: Service, at_least: float = 1, timeout_s: float = 60) -> None:
        """Until the service has read `at_least` records in its current life."""
        _wait_metric(service, "segstream_events_consumed_total", at_least, timeout_s)

    def wait_assigned(self, service: Service, partitions: int = 1, timeout_s: float = 60) -> None:
        _wait_metric(service, "segstream_assigned_partitions", partitions, timeout_s)

    def finish(self, *services: Service, timeout_s: float = 120.0) -> Verdict:
        """The end of a scenario: every record committed, the services stopped, then `verify`."""
        self.wait_drained(services, timeout_s)
        for service in services:
            self.stop(service)
        return self.verify()

    def close(self) -> None:
        for service in self.services:
            if service.running():
                service.signal(signal.SIGCONT)  # a frozen process cannot die of SIGKILL late
                service.kill()

    def verify(self) -> Verdict:
        return verify(self)


def _wait_metric(service: Service, name: str, at_least: float, timeout_s: float) -> None:
    wait_until(
        lambda: (service.metric(name) or 0) >= at_least,
        f"{service.name}'s {name} to reach {at_least:.0f}",
        timeout_s,
        [service],
    )


# -- the checks --------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What a verified run came to; `figures()` is printed for the report."""

    records: int = 0
    users: int = 0
    applied: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_letter_copies: int = 0
    # The segstream headers of each dead letter, by the (partition, offset) it came from.
    dead_letter_headers: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)
    changes: int = 0
    change_copies: int = 0
    emitted_at_differs: int = 0
    summaries: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "users": self.users,
            "applied": self.applied,
            "dead_letters": dict(self.dead_letters),
            "dead_letter_copies": self.dead_letter_copies,
            "changes": self.changes,
            "change_copies": self.change_copies,
            "emitted_at_differs": self.emitted_at_differs,
            "summaries": self.summaries,
        }


def verify(rig: Rig) -> Verdict:
    """Every invariant of a finished run; each failure names what differs."""
    verdict = Verdict(records=len(rig.feed.sent), summaries=len(rig.summaries))
    assert rig.committed() == rig.feed.ends(), "some records were never committed"
    reference = reference_of(rig.feed.sent, rig.settings)
    profiles = {p["user_id"]: p for p in all_profiles(rig.settings)}
    check_profiles(profiles, reference, verdict)
    check_dead_letters(rig, reference, verdict)
    check_changes(rig, profiles, verdict)
    assert populations(rig.settings) == truth(profiles.values()), "population tallies are off"
    for summary in rig.summaries:
        accounted = summary["processed"] + summary["dead_lettered"]
        assert summary["consumed"] == accounted, f"records neither processed nor dead: {summary}"
        assert summary["clean_exit"], summary
    # Printed for the suite's report (`pytest -s` or `-rP` shows it).
    print(f"verdict: {orjson.dumps(verdict.figures()).decode()}")
    return verdict


def reference_of(sent: Sequence[Sent], settings: Settings) -> Reference:
    """The reference fold of the valid records, in each partition's offset order."""
    rules = settings.features.rules()
    reference = Reference(rules.lateness_ms, rules.windows)
    now_ms = int(time.time() * 1000)
    arrivals = []
    for one in sorted(sent, key=lambda s: (s.partition, s.offset)):
        if one.record.reason is None:
            event = decode_event(one.record.value, now_ms=now_ms)
            assert isinstance(event, Event), f"the test sent an invalid record as valid: {event}"
            arrivals.append(Arrival(event, one.partition, one.offset))
    reference.fold(arrivals)
    return reference


def check_profiles(
    profiles: dict[str, dict[str, Any]], reference: Reference, verdict: Verdict
) -> None:
    users = set(reference.accepted)
    verdict.users = len(profiles)
    verdict.applied = sum(int(p["features"]["events_total"]) for p in profiles.values())
    missing, extra = sorted(users - set(profiles)), sorted(set(profiles) - users)
    assert not missing and not extra, f"users missing {missing[:10]}, unexpected {extra[:10]}"
    wrong = [u for u in sorted(users) if profiles[u]["features"] != reference.profile(u)]
    counts = {
        u: (profiles[u]["features"]["events_total"], len(reference.accepted[u])) for u in wrong
    }
    lost = sum(max(0, want - got) for got, want in counts.values())
    doubled = sum(max(0, got - want) for got, want in counts.values())
    assert not wrong, (
        f"{len(wrong)} profiles differ from the reference: {lost} events lost, {doubled} counted "
        f"twice; (stored, reference) events_total: {dict(list(counts.items())[:10])}; first: "
        f"{_differences(profiles[wrong[0]]['features'], reference.profile(wrong[0]))}"
    )


def _differences(got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (got.get(k), want.get(k))
        for k in sorted(got.keys() | want.keys())
        if got.get(k) != want.get(k)
    }


def check_dead_letters(rig: Rig, reference: Reference, verdict: Verdict) -> None:
    """Each invalid or late record is in the DLQ with its reason (at least once), nothing else."""
    expected = {(s.partition, s.offset): s.record.reason for s in rig.feed.sent if s.record.reason}
    expected.update({(a.partition, a.offset): "late" for a in reference.late})
    found: dict[tuple[int, int], str] = {}
    copies = 0
    for message in drain(rig.bootstrap, rig.settings.topics.dlq, PARTITIONS, quiet_s=2.0):
        origin = origin_of(message.headers() or [])
        where = (int(origin["origin.partition"]), int(origin["origin.offset"]))
        copies += where in found
        found[where] = origin["error.reason"]
        verdict.dead_letter_headers[where] = origin
    verdict.dead_letters = Counter(found.values())
    verdict.dead_letter_copies = copies
    wrong: dict[tuple[int, int], tuple[str | None, str | None]] = {
        w: (found.get(w), r) for w, r in expected.items() if found.get(w) != r
    }
    wrong.update({w: (r, None) for w, r in found.items() if w not in expected})
    assert not wrong, f"dead letters differ, (partition, offset): (found, expected): {wrong}"


def check_changes(rig: Rig, profiles: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    """No change id with two payloads (emitted_at aside), and no gap in any user's sequence."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    records = drain(rig.bootstrap, rig.settings.topics.segments, PARTITIONS, quiet_s=2.0)
    for change in changes_of(records):
        by_id[change["change_id"]].append(change)
    assert by_id, "no segment change was published at all"
    verdict.changes = len(by_id)
    verdict.change_copies = sum(len(c) - 1 for c in by_id.values())
    # Older services stamped each send with `emitted_at`; counted apart, never compared.
    verdict.emitted_at_differs = sum(
        len({c.get("emitted_at") for c in v}) > 1 for v in by_id.values()
    )
    conflicting = {i: copies for i, copies in by_id.items() if len(set(map(_decision, copies))) > 1}
    assert not conflicting, f"change ids with different payloads: {list(conflicting.items())[:3]}"
    problems = sequence_problems(by_id, profiles)
    assert not problems, f"change sequences with gaps or unpublished: {problems[:5]}"


def sequence_problems(
    by_id: dict[str, list[dict[str, Any]]], profiles: dict[str, dict[str, Any]]
) -> list[tuple[str, int, dict[str, list[int]]]]:
    """Users whose published sequences are not gapless 1..k, or none of which ends at the
    stored count of changes. A change id is `<user>[:<epoch>]:<seq>`: the sequence is the
    number after the last ':', counted per everything before it (a user and a state epoch)."""
    sequences: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for change_id, copies in by_id.items():
        stem, _, seq = change_id.rpartition(":")
        sequences[copies[0]["user_id"]][stem].add(int(seq))
    problems = []
    for user in sorted(sequences.keys() | {u for u, p in profiles.items() if p["changes"]}):
        stored = profiles[user]["changes"] if user in profiles else -1
        found = {stem: sorted(seqs) for stem, seqs in sequences.get(user, {}).items()}
        gapless = all(seqs == list(range(1, len(seqs) + 1)) for seqs in found.values())
        if not gapless or stored not in {len(seqs) for seqs in found.values()}:
            problems.append((user, stored, found))
    return problems


def _decision(change: dict[str, Any]) -> bytes:
    """A change's payload without when it was sent."""
    return orjson.dumps(
        {k: v for k, v in change.items() if k != "emitted_at"}, option=orjson.OPT_SORT_KEYS
    )


# -- input shapes shared by tests --------------------------------------------------------------


def shuffled_within(lines: Sequence[bytes], spread_ms: int, seed: int) -> list[bytes]:
    """The lines reordered by event time plus a random delay of up to `spread_ms`: out of
    order, but never further behind than the spread."""
    rng = random.Random(seed)
    timed = [(orjson.loads(line)["ts"] + rng.randrange(spread_ms), line) for line in lines]
    return [line for _, line in sorted(timed, key=lambda pair: pair[0])]
