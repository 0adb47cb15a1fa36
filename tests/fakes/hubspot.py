"""A HubSpot on loopback: the CRM v3 APIs the ``hubspot`` connector reads, OAuth and webhooks.

Answers as HubSpot documents them (errors as ``{status: "error", message, correlationId,
category}``):

- ``GET /crm/v3/objects/{type}``: ``limit`` (at most 100), ``after`` (an id token),
  ``properties`` (repeated or comma-separated; omitted: a default set), ``archived`` (only
  archived records when true, with ``archivedAt``). A URL longer than ``max_url_length`` gets
  414.
- ``POST /crm/v3/objects/{type}/search``: ``filterGroups`` (OR of groups, AND of filters;
  operators EQ, NEQ, GT, GTE, LT, LTE, HAS_PROPERTY on ``hs_lastmodifieddate`` /
  ``lastmodifieddate`` / ``createdate`` (milliseconds or ISO) and ``hs_object_id``), ``sorts``
  (strings or ``{propertyName, direction}``), ``limit`` (at most 200), ``after`` (an offset: 400
  once it reaches 10,000), ``total``. Never archived records; no rate-limit headers.
- ``GET /crm/v3/properties/{type}``; ``GET /crm-object-schemas/v3/schemas`` (and
  ``/crm/v3/schemas``) for custom objects.
- ``POST /crm/v4/associations/{from}/{to}/batch/read`` (at most ``association_page`` targets
  per record, then ``paging``) and ``GET /crm/v4/objects/{type}/{id}/associations/{to}``.
- ``GET``/``POST /webhooks/v3/{appId}/subscriptions``, ``PATCH .../subscriptions/{id}`` and
  ``GET``/``PUT /webhooks/v3/{appId}/settings`` (an https ``targetUrl`` and
  ``throttling.maxConcurrentRequests``), authenticated by the
  developer API key in the ``hapikey`` query parameter.
- ``POST /oauth/v1/token`` (``grant_type=refresh_token``); access tokens expire after
  ``token_lifetime`` seconds (401 ``EXPIRED_AUTHENTICATION``); unknown tokens get 401.
- Rate limits per account: ``max_requests`` per rolling ``interval`` seconds for every request
  and ``search_per_second`` for search requests (which count against both); 429
  ``RATE_LIMIT`` (with ``Retry-After`` only when ``retry_after`` is set). Non-search answers
  carry ``X-HubSpot-RateLimit-Max``, ``-Remaining``, ``-Interval-Milliseconds``, ``-Secondly``,
  ``-Secondly-Remaining``, ``-Daily``, ``-Daily-Remaining``.

``script`` queues answers for the next CRM requests (429 with/without ``Retry-After``, 5xx,
401); ``on_page`` is called after every list or search page is computed (so a test can change
records between pages, with ``touch``/``archive``/``add``). Every request is in ``requests``.
The deals of ``deals_dataset`` (25,000 deals, 12,000 of them modified at the same millisecond)
are built once per process and shared copy-on-write.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.loopback import LoopbackServer

PRIVATE_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-0000"
REFRESH_TOKEN = "fake-refresh-token-0000"
DEVELOPER_API_KEY = "fake-developer-hapikey-0000"
APP_ID = 424242
PORTAL_ID = 62515

SHARED_MODIFIED = "2024-03-01T00:00:00.000Z"
SEARCH_RESULT_CAP = 10_000
TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}
SINGULAR = {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets"}
DEFAULT_PROPERTIES = {
    "contacts": ["firstname", "lastname", "email"],
    "companies": ["name", "domain"],
    "deals": ["dealname", "amount", "closedate", "pipeline", "dealstage"],
    "tickets": ["content", "hs_pipeline", "hs_pipeline_stage", "subject"],
}
WEBHOOK_EVENTS = {
    f"{kind}.{event}"
    for kind in ("contact", "company", "deal", "ticket")
    for event in ("creation", "deletion", "propertyChange", "merge", "restore", "associationChange")
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(ms: int) -> str:
    """Milliseconds since the epoch as HubSpot writes times (``2024-03-01T00:00:00.000Z``)."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def to_ms(value: Any) -> int | None:
    """A filter value or timestamp (milliseconds, or ISO 8601) as milliseconds."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class Stored:
    """One record as the fake keeps it (immutable: changes replace it)."""

    id: int
    properties: dict[str, str]
    created_ms: int
    modified_ms: int
    archived_ms: int | None = None

    def wire(self, names: list[str] | None, modified: str) -> dict[str, Any]:
        """HubSpot's object shape with the properties ``names`` (plus the ones always sent)."""
        if names is None:
            chosen = dict(self.properties)
        else:
            always = ("hs_object_id", "createdate", modified)
            chosen = {n: self.properties.get(n) for n in (*always, *names) if n in self.properties}
            chosen.update({n: None for n in names if n not in self.properties})
        record: dict[str, Any] = {
            "id": str(self.id),
            "properties": chosen,
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.modified_ms),
            "archived": self.archived_ms is not None,
        }
        if self.archived_ms is not None:
            record["archivedAt"] = iso(self.archived_ms)
        return record


@lru_cache(maxsize=4)
def deals_dataset(
    count: int = 25_000, shared: int = 12_000, first_shared: int = 5_001
) -> tuple[Stored, ...]:
    """``count`` deals (ids 1..count); ids ``first_shared`` .. ``first_shared + shared - 1``
    were all last modified at ``SHARED_MODIFIED``, the others an hour after their creation."""
    base = to_ms("2024-01-01T00:00:00Z") or 0
    shared_ms = to_ms(SHARED_MODIFIED) or 0
    stages = ("appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost")
    deals = []
    for i in range(1, count + 1):
        created = base + i * 60_000
        modified = shared_ms if first_shared <= i < first_shared + shared else created + 3_600_000
        deals.append(
            Stored(
                id=i,
                properties={
                    "hs_object_id": str(i),
                    "dealname": f"Deal {i}",
                    "amount": str((i % 97) * 100),
                    "dealstage": stages[i % 4],
                    "pipeline": "default",
                    "closedate": iso(created + 86_400_000),
                    "createdate": iso(created),
                    "hs_lastmodifieddate": iso(modified),
                },
                created_ms=created,
                modified_ms=modified,
            )
        )
    return tuple(deals)


@dataclass(frozen=True)
class Reply:
    """An answer: HTTP status, JSON body and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One request the server received, and its answer's status."""

    method: str
    path: str
    url: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    at: float
    kind: str = ""  # list, search, properties, schemas, associations, webhooks, oauth, other
    status: int = 0


def error(status: int, message: str, category: str, **extra: Any) -> Reply:
    """HubSpot's error answer."""
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return Reply(status, body)


def rate_limited(retry_after: int | None = None, policy: str = "TEN_SECONDLY_ROLLING") -> Reply:
    """HubSpot's 429 (``Retry-After`` seconds when given)."""
    reply = error(
        429,
        f"You have reached your {policy.lower()} limit.",
        "RATE_LIMITS",
        errorType="RATE_LIMIT",
        policyName=policy,
    )
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(429, reply.body, headers)


@dataclass
class Portal:
    """One CRM object type's data: records by id, and per sorted id its modified date and
    whether it is live (parallel lists, so a search scans 25,000 records quickly)."""

    records: dict[int, Stored]
    ids: list[int]  # sorted ids, live and archived
    modified: str  # the modified-date property
    properties: list[dict[str, Any]]
    mods: list[int] = field(default_factory=list)
    live: list[bool] = field(default_factory=list)

    def rebuild(self) -> None:
        self.ids = sorted(self.records)
        self.mods = [self.records[i].modified_ms for i in self.ids]
        self.live = [self.records[i].archived_ms is None for i in self.ids]

    def put(self, record: Stored) -> None:
        """Store ``record`` (a new id must be greater than every other)."""
        self.records[record.id] = record
        position = bisect.bisect_left(self.ids, record.id)
        if position == len(self.ids) or self.ids[position] != record.id:
            self.ids.insert(position, record.id)
            self.mods.insert(position, record.modified_ms)
            self.live.insert(position, record.archived_ms is None)
        else:
            self.mods[position] = record.modified_ms
            self.live[position] = record.archived_ms is None


class FakeHubSpot(LoopbackServer):
    """The server; use as a context manager (it listens on 127.0.0.1, a free port)."""

    def __init__(
        self,
        *,
        max_requests: int = 10_000,
        interval: float = 10.0,
        search_per_second: int = 1_000,
        retry_after: int | None = None,
        max_url_length: int = 2048,
        token_lifetime: float = 1800.0,
        association_page: int = 500,
        deals: int | tuple[int, int] = 0,
    ) -> None:
        self.max_requests = max_requests
        self.interval = interval
        self.search_per_second = search_per_second
        self.retry_after = retry_after
        self.max_url_length = max_url_length
        self.token_lifetime = token_lifetime
        self.association_page = association_page
        self.private_tokens = {PRIVATE_TOKEN}
        self.access_tokens: dict[str, float] = {}  # OAuth token -> expiry (time.time())
        self.refreshes = 0
        self.requests: list[Request] = []
        self.on_page: Callable[[str, int], None] | None = None
        self.pages = 0
        self.schemas: list[dict[str, Any]] = []
        self.associations: dict[tuple[str, str], dict[int, list[int]]] = {}
        self.subscriptions: dict[int, list[dict[str, Any]]] = {APP_ID: []}
        self.webhook_settings: dict[int, dict[str, Any]] = {}
        self.types: dict[str, Portal] = {}
        self._script: deque[Reply] = deque()
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._lock = threading.RLock()
        for name in DEFAULT_PROPERTIES:
            self.define(name)
        if deals:
            count, shared = deals if isinstance(deals, tuple) else (deals, min(12_000, deals))
            self.load("deals", deals_dataset(count, shared))
        self._serve_with(_handler(self))

    # -- test data ----------------------------------------------------------------------

    def define(
        self, name: str, properties: list[str] | None = None, *, modified: str | None = None
    ) -> None:
        """Declare object type ``name`` with ``properties`` (besides the ones every type has)."""
        modified = modified or ("lastmodifieddate" if name == "contacts" else "hs_lastmodifieddate")
        names = [*DEFAULT_PROPERTIES.get(name, []), *(properties or [])]
        names += [n for n in ("hs_object_id", "createdate", modified) if n not in names]
        definitions = [
            {"name": n, "label": n.title(), "type": "string", "fieldType": "text", "hidden": False}
            for n in names
        ]
        self.types[name] = Portal({}, [], modified, definitions)

    def define_custom(self, name: str, object_type_id: str, properties: list[str]) -> None:
        """A custom object (schema ``name``, ``objectTypeId``) with ``properties``."""
        self.define(object_type_id, properties)
        self.schemas.append(
            {
                "id": object_type_id.split("-")[1],
                "name": name,
                "objectTypeId": object_type_id,
                "fullyQualifiedName": f"p{PORTAL_ID}_{name}",
                "labels": {"singular": name, "plural": name},
                "properties": self.types[object_type_id].properties,
                "archived": False,
            }
        )

    def load(self, name: str, records: tuple[Stored, ...] | list[Stored]) -> None:
        portal = self.types[name]
        portal.records.update((record.id, record) for record in records)
        portal.rebuild()

    def add(self, name: str, properties: dict[str, str], *, modified_ms: int | None = None) -> int:
        """A new record (the next id) modified now (or at ``modified_ms``); its id."""
        with self._lock:
            portal = self.types[self._type(name)]
            record_id = (portal.ids[-1] if portal.ids else 0) + 1
            now = modified_ms if modified_ms is not None else _now_ms()
            props = {
                **properties,
                "hs_object_id": str(record_id),
                "createdate": iso(now),
                portal.modified: iso(now),
            }
            portal.put(Stored(record_id, props, now, now))
            return record_id

    def touch(self, name: str, record_id: int, **properties: str) -> None:
        """Change record ``record_id``: its properties and its modified date (now)."""
        with self._lock:
            portal = self.types[self._type(name)]
            old = portal.records[record_id]
            now = max(_now_ms(), old.modified_ms + 1)
            props = {**old.properties, **properties, portal.modified: iso(now)}
            portal.put(Stored(record_id, props, old.created_ms, now))

    def archive(self, name: str, record_id: int) -> None:
        with self._lock:
            portal = self.types[self._type(name)]
            old = portal.records[record_id]
            now = _now_ms()
            portal.put(
                Stored(record_id, old.properties, old.created_ms, old.modified_ms, archived_ms=now)
            )

    def associate(self, from_type: str, from_id: int, to_type: str, *to_ids: int) -> None:
        links = self.associations.setdefault((from_type, to_type), {})
        links.setdefault(from_id, []).extend(to_ids)
        back = self.associations.setdefault((to_type, from_type), {})
        for to_id in to_ids:
            back.setdefault(to_id, []).append(from_id)

    def script(self, *replies: Reply) -> None:
        """Answer the next CRM requests with ``replies`` (then normally again)."""
        with self._lock:
            self._script.extend(replies)

    def expire_tokens(self) -> None:
        """Every OAuth access token issued so far expires now."""
        with self._lock:
            for token in self.access_tokens:
                self.access_tokens[token] = time.time() - 1

    def count(self, kind: str, status: int | None = None) -> int:
        return sum(
            1 for r in self.requests if r.kind == kind and (status is None or r.status == status)
        )

    # -- request handling (the server's threads) -----------------------------------------

    def handle(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._route(request)
            request.status = reply.status
            return reply

    def _route(self, request: Request) -> Reply:
        path = request.path.rstrip("/")
        parts = path.strip("/").split("/")
        if path == "/oauth/v1/token" and request.method == "POST":
            request.kind = "oauth"
            return self._token(request)
        if parts[:2] == ["webhooks", "v3"] and len(parts) >= 4:
            request.kind = "webhooks"
            return self._webhooks(request, parts[2], parts[3:])
        request.kind = _kind(request.method, parts)
        if request.kind == "other":
            return error(404, f"No route for {request.method} {path}", "OBJECT_NOT_FOUND")
        problem = self._authenticate(request)
        if problem is not None:
            return problem
        limited = self._rate_limit(request.kind == "search", request.at)
        if limited is not None:
            return limited
        if self._script:
            return self._script.popleft()
        if len(request.url) > self.max_url_length:
            return error(414, "URI Too Long", "VALIDATION_ERROR")
        reply = self._crm(request, parts)
        if request.kind != "search" and reply.status < 500:
            reply.headers.update(self._limit_headers(request.at))
        return reply

    def _crm(self, request: Request, parts: list[str]) -> Reply:
        if request.kind == "list":
            return self._list(request, parts[3])
        if request.kind == "search":
            return self._search(request, parts[3])
        if request.kind == "properties":
            return self._properties(parts[3])
        if request.kind == "schemas":
            return Reply(200, {"results": self.schemas})
        if request.kind == "associations":
            return self._batch_associations(request, parts[3], parts[4])
        return self._association_page(request, parts[3], int(parts[4]), parts[6])

    def _authenticate(self, request: Request) -> Reply | None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not token:
            return error(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            )
        if token in self.private_tokens:
            return None
        expiry = self.access_tokens.get(token)
        if expiry is None:
            return error(
                401, "The OAuth token used to make this call is invalid.", "INVALID_AUTHENTICATION"
            )
        if expiry <= time.time():
            ago = int(time.time() - expiry) + 1
            return error(
                401,
                f"The OAuth token used to make this call expired {ago} second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        return None

    def _rate_limit(self, search: bool, now: float) -> Reply | None:
        _expire(self._window, now - self.interval)
        _expire(self._search_window, now - 1.0)
        if len(self._window) >= self.max_requests:
            return _with(rate_limited(self.retry_after), self._limit_headers(now))
        if search and len(self._search_window) >= self.search_per_second:
            return rate_limited(self.retry_after, policy="SECONDLY")
        self._window.append(now)
        if search:
            self._search_window.append(now)
        return None

    def _limit_headers(self, now: float) -> dict[str, str]:
        _expire(self._window, now - self.interval)
        remaining = max(0, self.max_requests - len(self._window))
        secondly = max(1, int(self.max_requests / self.interval))
        recent = sum(1 for at in self._window if at > now - 1.0)
        return {
            "X-HubSpot-RateLimit-Daily": "500000",
            "X-HubSpot-RateLimit-Daily-Remaining": "499000",
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.interval * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.max_requests),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Secondly": str(secondly),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, secondly - recent)),
        }

    # -- CRM ------------------------------------------------------------------------------

    def _type(self, name: str) -> str:
        name = SINGULAR.get(name, name)
        for known, type_id in TYPE_IDS.items():
            if name == type_id:
                return known
        for schema in self.schemas:
            if name in (schema["name"], schema["fullyQualifiedName"]):
                return str(schema["objectTypeId"])
        return name

    def _portal(self, name: str) -> Portal | None:
        return self.types.get(self._type(name))

    def _list(self, request: Request, name: str) -> Reply:
        portal = self._portal(name)
        if portal is None:
            return _unknown_type(name)
        query = request.query
        limit = int(_first(query, "limit") or 10)
        if limit > 100:
            return error(400, "limit must be at most 100", "VALIDATION_ERROR")
        archived = (_first(query, "archived") or "false").lower() == "true"
        names = _names(query.get("properties"))
        after = _first(query, "after")
        start = bisect.bisect_right(portal.ids, int(after)) if after else 0
        results: list[Stored] = []
        position = start
        while position < len(portal.ids) and len(results) < limit:
            record = portal.records[portal.ids[position]]
            position += 1
            if (record.archived_ms is not None) == archived:
                results.append(record)
        more = any(
            (portal.records[i].archived_ms is not None) == archived for i in portal.ids[position:]
        )
        body: dict[str, Any] = {
            "results": [
                r.wire(names or DEFAULT_PROPERTIES.get(name), portal.modified) for r in results
            ]
        }
        if more and results:
            body["paging"] = {"next": {"after": str(results[-1].id), "link": "?after="}}
        self._paged("list")
        return Reply(200, body)

    def _search(self, request: Request, name: str) -> Reply:
        portal = self._portal(name)
        if portal is None:
            return _unknown_type(name)
        body = request.body if isinstance(request.body, dict) else {}
        limit = int(body.get("limit") or 10)
        if limit > 200:
            return error(400, "limit must be at most 200", "VALIDATION_ERROR")
        offset = int(body.get("after") or 0)
        if offset >= SEARCH_RESULT_CAP:
            return error(
                400,
                "There was a problem with the request.",
                "VALIDATION_ERROR",
                errors=[{"message": f"after must be less than {SEARCH_RESULT_CAP}"}],
            )
        try:
            match = _compile_groups(body.get("filterGroups") or [], portal)
        except ValueError as exc:
            return error(400, str(exc), "VALIDATION_ERROR")
        sorts = _sorts(body.get("sorts"))
        bounds = _range_bounds(body.get("filterGroups") or [], portal)
        if bounds is not None and sorts == [("hs_object_id", False)]:
            first_id, low, high = bounds  # the common case, fast: already in id order
            start = bisect.bisect_left(portal.ids, first_id)
            found = [
                portal.records[i]
                for i, modified, live in zip(
                    portal.ids[start:], portal.mods[start:], portal.live[start:], strict=True
                )
                if live and low <= modified < high
            ]
        else:
            first = _id_floor(body.get("filterGroups") or [], portal.ids)
            found = [
                portal.records[i]
                for i in portal.ids[first:]
                if portal.records[i].archived_ms is None and match(portal.records[i])
            ]
            for prop, descending in reversed(sorts):
                found.sort(key=lambda r, p=prop: _value(r, p, portal), reverse=descending)
        page = found[offset : offset + limit]
        names = body.get("properties") or DEFAULT_PROPERTIES.get(name)
        answer: dict[str, Any] = {
            "total": len(found),
            "results": [r.wire(list(names or []), portal.modified) for r in page],
        }
        if offset + limit < len(found):
            answer["paging"] = {"next": {"after": str(offset + limit)}}
        self._paged("search")
        return Reply(200, answer)

    def _paged(self, kind: str) -> None:
        self.pages += 1
        if self.on_page is not None:
            self.on_page(kind, self.pages)

    def _properties(self, name: str) -> Reply:
        portal = self._portal(name)
        if portal is None:
            return _unknown_type(name)
        return Reply(200, {"results": portal.properties})

    def _batch_associations(self, request: Request, from_type: str, to_type: str) -> Reply:
        links = self.associations.get((self._type(from_type), self._type(to_type)), {})
        inputs = (request.body or {}).get("inputs") if isinstance(request.body, dict) else None
        if not isinstance(inputs, list):
            return error(400, "inputs is required", "VALIDATION_ERROR")
        results = []
        for item in inputs:
            from_id = int(str(item.get("id")))
            targets = links.get(from_id, [])
            if not targets:
                continue
            result: dict[str, Any] = {
                "from": {"id": str(from_id)},
                "to": [_target(t) for t in targets[: self.association_page]],
            }
            if len(targets) > self.association_page:
                result["paging"] = {"next": {"after": str(self.association_page)}}
            results.append(result)
        now = iso(_now_ms())
        return Reply(
            200,
            {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now},
        )

    def _association_page(
        self, request: Request, from_type: str, from_id: int, to_type: str
    ) -> Reply:
        targets = self.associations.get((self._type(from_type), self._type(to_type)), {}).get(
            from_id, []
        )
        offset = int(_first(request.query, "after") or 0)
        limit = int(_first(request.query, "limit") or 500)
        body: dict[str, Any] = {"results": [_target(t) for t in targets[offset : offset + limit]]}
        if offset + limit < len(targets):
            body["paging"] = {"next": {"after": str(offset + limit)}}
        return Reply(200, body)

    # -- OAuth and webhooks ---------------------------------------------------------------

    def _token(self, request: Request) -> Reply:
        form = request.body if isinstance(request.body, dict) else {}
        if form.get("grant_type") != "refresh_token":
            return Reply(400, {"status": "BAD_GRANT_TYPE", "message": "unsupported grant_type"})
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return Reply(
                400, {"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"}
            )
        if form.get("refresh_token") != REFRESH_TOKEN:
            return Reply(
                400, {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}
            )
        self.refreshes += 1
        token = f"oauth-access-{uuid.uuid4().hex}"
        self.access_tokens[token] = time.time() + self.token_lifetime
        return Reply(
            200,
            {
                "token_type": "bearer",
                "refresh_token": REFRESH_TOKEN,
                "access_token": token,
                "expires_in": int(self.token_lifetime),
            },
        )

    def _webhooks(self, request: Request, app: str, rest: list[str]) -> Reply:
        if _first(request.query, "hapikey") != DEVELOPER_API_KEY:
            return error(
                401,
                "The API key provided is invalid. View or manage your API key here: "
                "https://app.hubspot.com/l/api-key/",
                "INVALID_AUTHENTICATION",
            )
        if not app.isdigit() or int(app) not in self.subscriptions:
            return error(404, f"App {app} not found", "OBJECT_NOT_FOUND")
        body = request.body if isinstance(request.body, dict) else {}
        if rest == ["settings"]:
            return self._webhook_settings(request, int(app), body)
        subscriptions = self.subscriptions[int(app)]
        if len(rest) == 2 and rest[0] == "subscriptions" and request.method == "PATCH":
            for subscription in subscriptions:
                if subscription["id"] == rest[1]:
                    subscription.update(active=bool(body.get("active")), updatedAt=iso(_now_ms()))
                    return Reply(200, subscription)
            return error(404, f"Subscription {rest[1]} not found", "OBJECT_NOT_FOUND")
        if rest != ["subscriptions"]:
            return error(404, f"No route for {request.method} {request.path}", "OBJECT_NOT_FOUND")
        if request.method == "GET":
            return Reply(200, {"results": subscriptions})
        if request.method != "POST":
            return error(405, "Method not allowed", "VALIDATION_ERROR")
        event = body.get("eventType")
        if event not in WEBHOOK_EVENTS:
            return error(400, f"Invalid eventType {event!r}", "VALIDATION_ERROR")
        if event.endswith(".propertyChange") and not body.get("propertyName"):
            return error(400, "propertyName is required for propertyChange", "VALIDATION_ERROR")
        now = iso(_now_ms())
        created = {
            "id": str(len(subscriptions) + 1000),
            "createdAt": now,
            "updatedAt": now,
            "eventType": event,
            "propertyName": body.get("propertyName"),
            "active": bool(body.get("active", False)),
        }
        subscriptions.append(created)
        return Reply(201, created)

    def _webhook_settings(self, request: Request, app: int, body: dict[str, Any]) -> Reply:
        if request.method == "GET":
            current = self.webhook_settings.get(app)
            if not current:
                return error(404, f"No settings for app {app}", "OBJECT_NOT_FOUND")
            return Reply(200, current)
        if request.method != "PUT":
            return error(405, "Method not allowed", "VALIDATION_ERROR")
        target = body.get("targetUrl")
        throttling = body.get("throttling")
        if not isinstance(target, str) or not target.startswith("https://"):
            return error(400, f"targetUrl must be an https URL, not {target!r}", "VALIDATION_ERROR")
        if not isinstance(throttling, dict) or not throttling.get("maxConcurrentRequests"):
            return error(400, "throttling.maxConcurrentRequests is required", "VALIDATION_ERROR")
        now = iso(_now_ms())
        self.webhook_settings[app] = {
            "targetUrl": target,
            "throttling": {"maxConcurrentRequests": int(throttling["maxConcurrentRequests"])},
            "createdAt": self.webhook_settings.get(app, {}).get("createdAt", now),
            "updatedAt": now,
        }
        return Reply(200, self.webhook_settings[app])


def _kind(method: str, parts: list[str]) -> str:
    if parts[:3] == ["crm", "v3", "objects"]:
        if len(parts) == 4 and method == "GET":
            return "list"
        if len(parts) == 5 and parts[4] == "search" and method == "POST":
            return "search"
    if parts[:3] == ["crm", "v3", "properties"] and len(parts) == 4 and method == "GET":
        return "properties"
    if method == "GET" and parts in (
        ["crm-object-schemas", "v3", "schemas"],
        ["crm", "v3", "schemas"],
    ):
        return "schemas"
    if parts[:3] == ["crm", "v4", "associations"] and parts[5:] == ["batch", "read"]:
        return "associations"
    if parts[:3] == ["crm", "v4", "objects"] and len(parts) == 7 and parts[5] == "associations":
        return "association_pages"
    return "other"


def _compile_groups(groups: list[dict[str, Any]], portal: Portal) -> Callable[[Stored], bool]:
    if len(groups) > 5:
        raise ValueError("at most 5 filterGroups")
    compiled = []
    for group in groups:
        filters = group.get("filters") or []
        if len(filters) > 6:
            raise ValueError("at most 6 filters per filterGroup")
        compiled.append([_compile_filter(f, portal) for f in filters])
    if not compiled:
        return lambda record: True
    return lambda record: any(all(test(record) for test in group) for group in compiled)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "EQ": lambda a, b: a == b,
    "NEQ": lambda a, b: a != b,
    "GT": lambda a, b: a is not None and a > b,
    "GTE": lambda a, b: a is not None and a >= b,
    "LT": lambda a, b: a is not None and a < b,
    "LTE": lambda a, b: a is not None and a <= b,
}


def _compile_filter(spec: dict[str, Any], portal: Portal) -> Callable[[Stored], bool]:
    prop, operator = spec.get("propertyName"), spec.get("operator")
    if operator == "HAS_PROPERTY":
        return lambda record: record.properties.get(prop) is not None
    if operator not in _OPERATORS:
        raise ValueError(f"unsupported operator {operator!r}")
    compare = _OPERATORS[operator]
    value = _typed(prop, spec.get("value"), portal)
    return lambda record: compare(_value(record, prop, portal), value)


def _typed(prop: Any, value: Any, portal: Portal) -> Any:
    if prop == "hs_object_id":
        return int(str(value))
    if prop in (portal.modified, "createdate"):
        ms = to_ms(value)
        if ms is None:
            raise ValueError(f"{value!r} is not a valid date for {prop}")
        return ms
    return str(value)


def _value(record: Stored, prop: str, portal: Portal) -> Any:
    if prop == "hs_object_id":
        return record.id
    if prop == portal.modified:
        return record.modified_ms
    if prop == "createdate":
        return record.created_ms
    return record.properties.get(prop)


def _id_floor(groups: list[dict[str, Any]], ids: list[int]) -> int:
    """Where to start scanning: after the greatest ``hs_object_id GT`` shared by every group."""
    floors = []
    for group in groups:
        bounds = [
            int(str(f.get("value")))
            for f in group.get("filters") or []
            if f.get("propertyName") == "hs_object_id" and f.get("operator") == "GT"
        ]
        floors.append(max(bounds) if bounds else None)
    if not floors or any(floor is None for floor in floors):
        return 0
    return bisect.bisect_right(ids, min(f for f in floors if f is not None))


def _range_bounds(groups: list[dict[str, Any]], portal: Portal) -> tuple[int, float, float] | None:
    """One group of range filters on the modified date and ``hs_object_id`` (lower bound) as
    ``(first id, lowest modified, modified limit)`` (the limit excluded); else ``None``."""
    if len(groups) != 1:
        return None
    first_id, low, high = 0, float("-inf"), float("inf")
    for spec in groups[0].get("filters") or []:
        prop, operator = spec.get("propertyName"), spec.get("operator")
        value = _typed(prop, spec.get("value"), portal)
        if prop == "hs_object_id" and operator in ("GT", "GTE"):
            first_id = max(first_id, value + (operator == "GT"))
        elif prop == portal.modified and operator in ("GT", "GTE", "EQ"):
            low = max(low, value + (operator == "GT"))
            if operator == "EQ":
                high = min(high, value + 1)
        elif prop == portal.modified and operator in ("LT", "LTE"):
            high = min(high, value + (operator == "LTE"))
        else:
            return None
    return first_id, low, high


def _sorts(sorts: Any) -> list[tuple[str, bool]]:
    found = []
    for item in sorts or [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]:
        if isinstance(item, str):
            found.append((item.lstrip("-"), item.startswith("-")))
        else:
            found.append((item.get("propertyName"), item.get("direction") == "DESCENDING"))
    return found


def _target(to_id: int) -> dict[str, Any]:
    return {
        "toObjectId": to_id,
        "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": None}],
    }


def _unknown_type(name: str) -> Reply:
    return error(400, f"Unable to infer object type from: {name}", "VALIDATION_ERROR")


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _expire(window: deque[float], before: float) -> None:
    while window and window[0] <= before:
        window.popleft()


def _with(reply: Reply, headers: dict[str, str]) -> Reply:
    return Reply(reply.status, reply.body, {**headers, **reply.headers})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _handler(fake: FakeHubSpot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stalls

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            url = urlsplit(self.path)
            query: dict[str, list[str]] = {}
            for name, value in parse_qsl(url.query, keep_blank_values=True):
                query.setdefault(name, []).append(value)
            headers = {name.lower(): value for name, value in self.headers.items()}
            body: Any = raw
            if raw and "json" in headers.get("content-type", ""):
                body = json.loads(raw)
            elif raw and "form-urlencoded" in headers.get("content-type", ""):
                body = dict(parse_qsl(raw))
            request = Request(
                self.command, unquote(url.path), self.path, query, body, headers, time.monotonic()
            )
            self._answer(fake.handle(request))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def _answer(self, reply: Reply) -> None:
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-HubSpot-Correlation-Id", str(uuid.uuid4()))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


@contextmanager
def fake_hubspot(**options: Any) -> Iterator[FakeHubSpot]:
    with FakeHubSpot(**options) as server:
        yield server
