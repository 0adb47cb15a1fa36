"""Paging through HubSpot's CRM: the list API, keyset search and v4 batch associations.

Each paginator is a small object made for one request sequence; a page token (``after``) or a
keyset position that does not move forward is an error, never an endless loop.

- ``ObjectList``: ``GET /crm/v3/objects/{type}`` paged by ``after`` (100 per page). Property
  names go in the URL; when they would make it longer than ``MAX_URL_LENGTH`` they are split
  into groups, each group read with the same ``after`` and ``limit``, and the answers merged by
  record id.
- ``KeysetSearch``: ``POST /crm/v3/objects/{type}/search`` for a modified-date window, 200 per
  page, sorted by ``hs_object_id`` ascending with the filter ``hs_object_id > <last id read>``
  on every page instead of an ``after`` offset. HubSpot refuses offsets past 10,000 (HTTP 400);
  a keyset has no such cap, and records modified while the extract runs leave the window
  instead of shifting the pages under it (no gap, no duplicate).
- ``read_associations``: ``POST /crm/v4/associations/{from}/{to}/batch/read`` for a page of
  ids, continued per record through ``GET /crm/v4/objects/{type}/{id}/associations/{to}``
  when one record has more associations than one answer holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_dataflow.hooks.hubspot_limits import HubSpotError

if TYPE_CHECKING:
    from airflow_dataflow.hooks.hubspot import HubSpotHook

LIST_LIMIT = 100  # the list API's maximum page size
SEARCH_LIMIT = 200  # the search API's maximum page size
ASSOCIATION_PAGE_LIMIT = 500
# Longest URL sent: HubSpot (and proxies in front of it) refuse long request lines with 414.
MAX_URL_LENGTH = 2000
_FIXED_QUERY = len("?limit=100&after=&archived=false") + 24  # plus room for an ``after`` token
OBJECT_ID = "hs_object_id"

Record = dict[str, Any]


class PagingError(HubSpotError):
    """HubSpot's paging did not move forward (the same token or position twice)."""


def property_groups(
    base_url: str, object_type: str, properties: Sequence[str], max_url: int = MAX_URL_LENGTH
) -> list[list[str]]:
    """``properties`` split so each list request's URL stays within ``max_url`` characters."""
    budget = max_url - len(f"{base_url}/crm/v3/objects/{quote(object_type)}") - _FIXED_QUERY
    groups: list[list[str]] = [[]]
    used = 0
    for name in properties:
        size = len("&properties=") + len(quote(name, safe=""))
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


@dataclass
class ObjectList:
    """One pass over ``GET /crm/v3/objects/{object_type}`` (archived or live records)."""

    hook: HubSpotHook
    object_type: str
    properties: Sequence[str]
    archived: bool = False
    split_pages: int = field(default=0, init=False)  # pages read in several requests
    changed: int = field(default=0, init=False)  # records missing from a later group's answer

    def pages(self) -> Iterator[list[Record]]:
        groups = property_groups(self.hook.base_url, self.object_type, self.properties)
        after: str | None = None
        while True:
            data = self._page(groups[0], after)
            records = data.get("results") or []
            if len(groups) > 1 and records:
                self._merge(records, groups[1:], after)
            if records:
                yield records
            following = ((data.get("paging") or {}).get("next") or {}).get("after")
            if not following or not records:
                return
            if following == after:
                raise PagingError(
                    f"HubSpot's list of {self.object_type} answered the page token {after!r} "
                    "with the same token: stopping instead of reading the page again"
                )
            after = str(following)

    def _page(self, properties: list[str], after: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"limit": LIST_LIMIT, "archived": self.archived}
        if properties:
            kwargs["properties"] = properties
        if after is not None:
            kwargs["after"] = after
        return self.hook.call("objects", "get_page", self.object_type, **kwargs).data or {}

    def _merge(self, records: list[Record], groups: list[list[str]], after: str | None) -> None:
        """Add the properties of the other groups to ``records``, matched by id."""
        self.split_pages += 1
        by_id = {str(record["id"]): record for record in records}
        missing: set[str] = set()
        for group in groups:
            seen: set[str] = set()
            for other in self._page(group, after).get("results") or []:
                record = by_id.get(str(other.get("id")))
                if record is not None:
                    seen.add(str(other["id"]))
                    record.setdefault("properties", {}).update(other.get("properties") or {})
            missing |= by_id.keys() - seen
        self.changed += len(missing)


@dataclass
class KeysetSearch:
    """Records whose ``modified`` property is in ``[start_ms, end_ms)``, by ascending id."""

    hook: HubSpotHook
    object_type: str
    properties: Sequence[str]
    modified: str
    start_ms: int | None
    end_ms: int
    requests: int = field(default=0, init=False)

    def body(self, last_id: int | None) -> dict[str, Any]:
        """The search request for the page after record ``last_id`` (``None``: the first)."""
        filters: list[dict[str, str]] = []
        if self.start_ms is not None:
            filters.append(
                {"propertyName": self.modified, "operator": "GTE", "value": str(self.start_ms)}
            )
        filters.append({"propertyName": self.modified, "operator": "LT", "value": str(self.end_ms)})
        if last_id is not None:
            filters.append({"propertyName": OBJECT_ID, "operator": "GT", "value": str(last_id)})
        return {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": OBJECT_ID, "direction": "ASCENDING"}],
            "properties": list(self.properties),
            "limit": SEARCH_LIMIT,
        }

    def pages(self) -> Iterator[list[Record]]:
        last_id: int | None = None
        while True:
            self.requests += 1
            answer = self.hook.call(
                "search", "do_search", self.object_type, self.body(last_id), search=True
            )
            data = answer.data or {}
            records = data.get("results") or []
            if not records:
                return
            newest = int(records[-1]["id"])
            if last_id is not None and newest <= last_id:
                raise PagingError(
                    f"HubSpot's search of {self.object_type} answered records after id "
                    f"{last_id} with id {newest}: stopping instead of reading them again"
                )
            yield records
            if not (data.get("paging") or {}).get("next") or len(records) < SEARCH_LIMIT:
                return
            last_id = newest


def read_associations(
    hook: HubSpotHook, from_type: str, to_type: str, ids: Sequence[str]
) -> dict[str, list[str]]:
    """The ids of the ``to_type`` records associated with each of ``ids`` (strings, in
    HubSpot's order, each once)."""
    found: dict[str, list[str]] = {record_id: [] for record_id in ids}
    if not ids:
        return found
    body = {"inputs": [{"id": record_id} for record_id in ids]}
    data = hook.call("associations", "get_page", from_type, to_type, body).data or {}
    for result in data.get("results") or []:
        record_id = str((result.get("from") or {}).get("id"))
        if record_id not in found:
            continue
        _add(found[record_id], result.get("to"))
        after = ((result.get("paging") or {}).get("next") or {}).get("after")
        while after:
            page = (
                hook.call(
                    "association_pages",
                    "get_page",
                    from_type,
                    record_id,
                    to_type,
                    after=after,
                    limit=ASSOCIATION_PAGE_LIMIT,
                ).data
                or {}
            )
            _add(found[record_id], page.get("results"))
            following = ((page.get("paging") or {}).get("next") or {}).get("after")
            if following == after:
                raise PagingError(
                    f"HubSpot's associations of {from_type} {record_id} to {to_type} repeated "
                    f"the page token {after!r}"
                )
            after = following
    return found


def _add(into: list[str], targets: Any) -> None:
    for target in targets or []:
        target_id = str(target.get("toObjectId"))
        if target_id not in into:
            into.append(target_id)
