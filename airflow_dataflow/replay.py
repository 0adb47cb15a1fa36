"""Replay dead letters: the route's current rules applied again, the results delivered.

Plain Python, no running Airflow: ``plan_replay`` decides, for each pending dead letter, what
to deliver where (or why it stays); ``replay`` stages those records, delivers each
destination's partition with ``pipeline.deliver.deliver`` (through the delivery ledger) and
records the outcome in the state store.

What a dead letter gets, by what produced it:

* a rule that is still in the route: that rule's current condition and transform, delivered to
  its current ``to``. A record the condition no longer matches stays, and so does one a step
  still fails on (with the new reason);
* no rule (malformed input, a record that is not an object, an output that could not be
  serialised): the whole current router, ``mode`` and ``unmatched`` included;
* a rule no longer in the route: it stays, saying so;
* a destination (it refused the record): the stored record, as it is, to that destination.

Only dead letters whose destinations all succeeded are marked replayed; the destinations a
replay did reach are recorded per dead letter, so a later replay sends only to the others.
Replaying twice delivers nothing the second time (replayed ones are no longer pending). If the
process dies between delivering and marking, the next replay of the same dead letters stages
the same records in the same order (by id), which the delivery ledger recognises and skips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.pipeline.partitions import partition_writer
from airflow_dataflow.pipeline.route import compile_route, rules_as_data
from airflow_dataflow.routing import DeadLetter, Routed, Router, compile_router
from airflow_dataflow.staging import StagingArea, default_staging_url
from airflow_dataflow.state.store import ReplayNote, StateStore

log = logging.getLogger(__name__)

RUN_ID_PREFIX = "replay__"


@dataclass
class Attempt:
    """What a replay does with one dead letter: records to deliver, or why it stays."""

    letter: Mapping[str, Any]
    deliveries: list[tuple[str, Any]] = field(default_factory=list)  # (destination, record)
    done: tuple[str, ...] = ()  # destinations earlier replays delivered it to
    reason: str | None = None  # set: it stays, nothing is delivered

    @property
    def id(self) -> int:
        return int(self.letter["id"])

    @property
    def destinations(self) -> list[str]:
        """Where this replay sends it, each destination once."""
        return list(dict.fromkeys(name for name, _ in self.deliveries))


@dataclass(frozen=True)
class DestinationResult:
    """One destination's delivery in a replay."""

    delivered: int = 0
    locations: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "locations": list(self.locations), "error": self.error}


@dataclass(frozen=True)
class EntryOutcome:
    """What became of one dead letter: replayed (to ``destinations``) or stayed (``reason``)."""

    id: int
    run_id: str
    rule: str | None
    replayed: bool
    destinations: tuple[str, ...] = ()
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "rule": self.rule,
            "status": "replayed" if self.replayed else "stayed",
            "destinations": list(self.destinations),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of one replay: per dead letter, and per destination."""

    route: str
    run_id: str
    entries: tuple[EntryOutcome, ...] = ()
    destinations: Mapping[str, DestinationResult] = field(default_factory=dict)

    @property
    def replayed(self) -> list[EntryOutcome]:
        return [entry for entry in self.entries if entry.replayed]

    @property
    def stayed(self) -> list[EntryOutcome]:
        return [entry for entry in self.entries if not entry.replayed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "run_id": self.run_id,
            "replayed": len(self.replayed),
            "stayed": len(self.stayed),
            "destinations": {name: result.to_dict() for name, result in self.destinations.items()},
            "entries": [entry.to_dict() for entry in self.entries],
        }


def replay_context(
    route: LoadedRoute, *, conf: Mapping[str, Any] | None = None, now: datetime | None = None
) -> RunContext:
    """The context of a replay run: a ``replay__<UTC time>`` run id, today's ``ds``, and the
    params' defaults overridden by ``conf`` (the original runs' params are not kept)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return RunContext(
        route=route.route_id,
        run_id=f"{RUN_ID_PREFIX}{now.isoformat()}",
        ds=now.date().isoformat(),
        params={**route.config.param_defaults(), **(conf or {})},
        route_file=route.file,
    )


class CurrentRules:
    """The route's current rules, compiled once per replay: each rule alone, and the router."""

    def __init__(self, route: LoadedRoute, context: RunContext) -> None:
        self.route = route
        self.context = context
        self._data = {rule["name"]: rule for rule in rules_as_data(route)}
        self._single: dict[str, Router] = {}

    @cached_property
    def router(self) -> Router:
        """Every rule, with the route's ``mode`` and ``unmatched``."""
        return compile_route(self.route, self.context)

    def rule(self, name: str) -> Router | None:
        """A router of the one rule ``name`` (nothing for unmatched records), if it still exists."""
        if name not in self._data:
            return None
        if name not in self._single:
            self._single[name] = compile_router(
                [self._data[name]], variables=self.context.template_vars()
            )
        return self._single[name]


def plan_replay(
    route: LoadedRoute, letters: Iterable[Mapping[str, Any]], context: RunContext
) -> list[Attempt]:
    """Per dead letter (ordered by id), the records to deliver or why it stays; no I/O."""
    rules = CurrentRules(route, context)
    return [plan_one(route, rules, letter) for letter in sorted(letters, key=lambda x: x["id"])]


def plan_one(route: LoadedRoute, rules: CurrentRules, letter: Mapping[str, Any]) -> Attempt:
    """One dead letter's attempt, by what produced it (see the module docstring)."""
    done = tuple(letter.get("replayed_to") or ())
    record, rule, destination = letter["record"], letter.get("rule"), letter.get("destination")
    if destination:
        if destination not in route.config.destinations:
            return Attempt(letter, done=done, reason=_gone("destination", destination, route))
        return _attempt(letter, done, [(destination, record)])
    if rule is None:
        return _routed(letter, done, rules.router.route(record))
    router = rules.rule(rule)
    if router is None:
        return Attempt(letter, done=done, reason=_gone("rule", rule, route))
    routed = router.route(record)
    if routed.status == "unmatched":
        reason = f"the record no longer matches the condition of rule {rule!r}"
        return Attempt(letter, done=done, reason=reason)
    return _routed(letter, done, routed)


def _routed(letter: Mapping[str, Any], done: tuple[str, ...], routed: Routed) -> Attempt:
    if routed.dead:
        return Attempt(letter, done=done, reason=_why(routed.dead, letter.get("rule")))
    return _attempt(letter, done, routed.deliveries)


def _attempt(
    letter: Mapping[str, Any], done: tuple[str, ...], deliveries: Sequence[tuple[str, Any]]
) -> Attempt:
    """Deliveries still to make: not to destinations earlier replays already reached."""
    return Attempt(letter, [(name, out) for name, out in deliveries if name not in done], done)


def _gone(kind: str, name: str, route: LoadedRoute) -> str:
    return f"{kind} {name!r} is no longer in route {route.route_id!r} ({route.file})"


def _why(dead: Sequence[DeadLetter], rule: str | None) -> str:
    """The new reason; naming the rule that failed when it is not the dead letter's own."""
    return "; ".join(
        f"rule {letter.rule!r}: {letter.error}" if letter.rule not in (None, rule) else letter.error
        for letter in dead
    )


def replay(
    route: LoadedRoute,
    letters: Iterable[Mapping[str, Any]],
    *,
    store: StateStore,
    conf: Mapping[str, Any] | None = None,
    staging_url: str | None = None,
    now: datetime | None = None,
) -> ReplayReport:
    """Replay pending dead letters of ``route``: deliver, then record what became of each.

    ``store`` is where they are marked; deliveries go through the configured store's ledger.
    Staging (the configured staging URL unless ``staging_url``) is removed afterwards.
    """
    context = replay_context(route, conf=conf, now=now)
    attempts = plan_replay(route, letters, context)
    if not attempts:
        return ReplayReport(route.route_id, context.run_id)
    staging = StagingArea(staging_url or default_staging_url(), route.route_id, context.run_id)
    try:
        partitions = stage(route, staging, attempts)
        results = {
            name: deliver_partition(route, name, context, partition)
            for name, partition in partitions.items()
        }
    finally:
        staging.clean()
    outcomes = [settle(attempt, results) for attempt in attempts]
    record_outcomes(store, route.route_id, context.run_id, attempts, outcomes)
    return ReplayReport(route.route_id, context.run_id, tuple(outcomes), results)


def stage(
    route: LoadedRoute, staging: StagingArea, attempts: Sequence[Attempt]
) -> dict[str, dict[str, Any]]:
    """One staged partition per destination that gets records, in the route's order."""
    wanted = {name for attempt in attempts for name in attempt.destinations}
    writers = {
        name: partition_writer(staging, name, settings)
        for name, settings in route.config.destinations.items()
        if name in wanted
    }
    try:
        for attempt in attempts:
            for name, output in attempt.deliveries:
                writers[name].write(output)
    finally:
        partitions = {name: writer.close() for name, writer in writers.items()}
    return partitions


def deliver_partition(
    route: LoadedRoute, name: str, context: RunContext, partition: dict[str, Any]
) -> DestinationResult:
    """Deliver one partition; a failure is reported, not raised, so the others still go."""
    try:
        result = deliver(route, name, context, partition)
    except Exception as exc:
        log.warning("replay of route %r: delivery to %r failed: %s", route.route_id, name, exc)
        return DestinationResult(error=f"{type(exc).__name__}: {exc}")
    return DestinationResult(result["delivered"], tuple(result["locations"]))


def settle(attempt: Attempt, results: Mapping[str, DestinationResult]) -> EntryOutcome:
    """Replayed when nothing stopped it and every destination it went to succeeded."""
    letter = attempt.letter
    outcome = EntryOutcome(attempt.id, str(letter["run_id"]), letter.get("rule"), replayed=False)
    if attempt.reason is not None:
        return replace(outcome, reason=attempt.reason)
    failed = [name for name in attempt.destinations if results[name].error]
    reached = tuple(name for name in attempt.destinations if name not in failed)
    if failed:
        reason = "; ".join(f"delivery to {name!r} failed: {results[name].error}" for name in failed)
        return replace(outcome, destinations=reached, reason=reason)
    return replace(outcome, replayed=True, destinations=reached)


def record_outcomes(
    store: StateStore,
    route_id: str,
    run_id: str,
    attempts: Sequence[Attempt],
    outcomes: Sequence[EntryOutcome],
) -> None:
    """Note every dead letter's progress, mark the replayed ones, then settle the ledger."""
    notes = {
        attempt.id: ReplayNote(
            replayed_to=tuple(dict.fromkeys([*attempt.done, *outcome.destinations])),
            error=outcome.reason,
        )
        for attempt, outcome in zip(attempts, outcomes, strict=True)
    }
    store.note_replay_attempts(route_id, run_id, notes)
    replayed = [outcome.id for outcome in outcomes if outcome.replayed]
    store.mark_dead_letters_replayed(route_id, replayed, replay_run_id=run_id)
    _settle_ledger(store, route_id, run_id)


def _settle_ledger(store: StateStore, route_id: str, run_id: str) -> None:
    """What ``commit`` does for a run: this replay's delivered batches become final, so a
    later run sending the same records again is a new delivery, not a skipped one."""
    from airflow_dataflow.state.ledger import settle_run

    settle_run(store.engine, route_id, run_id)


__all__ = [
    "Attempt",
    "CurrentRules",
    "DestinationResult",
    "EntryOutcome",
    "ReplayReport",
    "plan_replay",
    "replay",
    "replay_context",
]
