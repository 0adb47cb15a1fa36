"""The ``hubspot`` connector's full reads against the fake HubSpot (the real client library)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_dataflow.connectors.base import SourceWarning
from airflow_dataflow.connectors.hubspot import HubSpotSettings
from airflow_dataflow.errors import SourceError
from tests.connectors.hubspot_support import connect, connector, deals_fake, fake, ids, read
from tests.fakes.hubspot import FakeHubSpot, deals_dataset

__all__ = ["deals_fake", "fake"]  # fixtures


@pytest.fixture
def small() -> FakeHubSpot:
    with FakeHubSpot(deals=(250, 100)) as server:
        yield server


def test_reads_every_record_in_hubspots_shape(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = read(connect(monkeypatch, small), object="deals")
    assert ids(records) == list(range(1, 251))
    first = records[0]
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived", "associations"}
    assert first["id"] == "1" and first["archived"] is False and first["associations"] == {}
    assert first["properties"]["dealname"] == "Deal 1"
    assert first["updatedAt"] == first["properties"]["hs_lastmodifieddate"]
    assert small.count("list") == 3  # 100 per page


def test_all_properties_come_from_the_properties_api(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    small.define("deals", ["custom_score"])
    small.load("deals", deals_dataset(250, 100))
    records = read(connect(monkeypatch, small), object="deals")
    assert small.count("properties") == 1
    assert "custom_score" in records[0]["properties"]  # asked for (HubSpot answers null)
    listed = next(r for r in small.requests if r.kind == "list")
    assert "custom_score" in listed.query["properties"]


def test_only_the_listed_properties_are_read(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = read(connect(monkeypatch, small), object="deals", properties=["amount"])
    assert small.count("properties") == 0
    assert "dealname" not in records[0]["properties"]
    assert records[0]["properties"]["amount"] == "100"


def test_long_property_lists_are_split_so_urls_stay_under_the_limit(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = [f"custom_property_with_a_long_name_{n:03d}" for n in range(120)]
    small.define("deals", extra)
    small.load("deals", deals_dataset(250, 100))
    records = read(connect(monkeypatch, small), object="deals")
    assert ids(records) == list(range(1, 251))
    assert all(set(extra) <= set(record["properties"]) for record in records)
    lists = [r for r in small.requests if r.kind == "list"]
    assert all(len(r.url) <= small.max_url_length for r in lists)
    assert all(r.status == 200 for r in lists)
    assert len(lists) > 3  # several requests per page, merged by id


def test_the_fake_refuses_a_long_url_with_414(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_dataflow.hooks.hubspot import HubSpotHook
    from airflow_dataflow.hooks.hubspot_limits import HubSpotApiError

    hook = HubSpotHook(connect(monkeypatch, small))
    names = [f"custom_property_with_a_long_name_{n:03d}" for n in range(120)]
    with pytest.raises(HubSpotApiError) as caught:
        hook.call("objects", "get_page", "deals", properties=names)
    assert caught.value.status == 414


def test_a_record_changed_between_the_requests_of_a_page_is_a_warning(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    small.define("deals", [f"custom_property_with_a_long_name_{n:03d}" for n in range(120)])
    small.load("deals", deals_dataset(250, 100))
    small.on_page = lambda kind, n: small.archive("deals", 5) if n == 1 else None
    items = list(connector(connect(monkeypatch, small), object="deals").read())
    warnings = [item for item in items if isinstance(item, SourceWarning)]
    assert len(warnings) == 1 and "1 records changed" in warnings[0].message
    assert 5 in [int(item["id"]) for item in items if isinstance(item, dict)]


def test_archived_records_are_left_out_by_default(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    small.archive("deals", 7)
    assert 7 not in ids(read(connect(monkeypatch, small), object="deals"))


def test_include_archived_reads_them_with_the_delete_flag(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    small.archive("deals", 7)
    records = read(connect(monkeypatch, small), object="deals", include_archived=True)
    archived = [record for record in records if record["archived"]]
    assert ids(archived) == [7]
    assert archived[0]["archivedAt"].endswith("Z")
    assert len(records) == 250


def test_associations_come_from_the_v4_batch_api(
    small: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    small.associate("deals", 1, "companies", 501, 502)
    small.associate("deals", 2, "contacts", 901)
    records = read(
        connect(monkeypatch, small), object="deals", associations=["companies", "contacts"]
    )
    assert records[0]["associations"] == {"companies": ["501", "502"], "contacts": []}
    assert records[1]["associations"] == {"companies": [], "contacts": ["901"]}
    assert small.count("associations") == 3 * 2  # one batch per page and type


def test_many_associations_of_one_record_are_paged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeHubSpot(deals=(10, 0), association_page=3) as server:
        server.associate("deals", 4, "companies", *range(100, 108))
        records = read(connect(monkeypatch, server), object="deals", associations=["companies"])
        assert records[3]["associations"]["companies"] == [str(n) for n in range(100, 108)]
        assert server.count("association_pages") == 1


@pytest.mark.parametrize("name", ["pets", "p62515_pets", "2-1234567"])
def test_custom_objects_by_name_or_object_type_id(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fake.define_custom("pets", "2-1234567", ["species"])
    fake.add("2-1234567", {"species": "cat"})
    records = read(connect(monkeypatch, fake), object=name)
    assert [r["properties"]["species"] for r in records] == ["cat"]
    assert "/crm/v3/objects/2-1234567" in [r.path for r in fake.requests]


def test_an_unknown_object_names_the_setting_and_the_known_ones(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.define_custom("pets", "2-1234567", ["species"])
    with pytest.raises(SourceError) as caught:
        read(connect(monkeypatch, fake), object="pest")
    message = str(caught.value)
    assert "route 'crm'" in message and "source.object 'pest'" in message
    assert "pets (2-1234567)" in message


def test_a_refused_token_fails_with_the_remedy(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.private_tokens.clear()
    with pytest.raises(SourceError) as caught:
        read(connect(monkeypatch, fake), object="deals")
    assert "HTTP 401" in str(caught.value) and "private-app token" in str(caught.value)


def test_a_missing_connection_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceError, match="connection 'nope' is not defined"):
        read("nope", object="deals")


def test_contacts_use_lastmodifieddate_as_the_cursor_field() -> None:
    contacts = HubSpotSettings(type="hubspot", connection="c", object="contacts", incremental={})
    deals = HubSpotSettings(type="hubspot", connection="c", object="deals", incremental={})
    assert contacts.cursor_spec().field == "lastmodifieddate"  # type: ignore[union-attr]
    assert deals.cursor_spec().field == "hs_lastmodifieddate"  # type: ignore[union-attr]
    assert HubSpotSettings(type="hubspot", connection="c", object="deals").cursor_spec() is None


def test_settings_refuse_unknown_keys_and_bad_durations() -> None:
    with pytest.raises(ValidationError):
        HubSpotSettings(type="hubspot", connection="c", object="deals", propertys=["a"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="invalid duration"):
        HubSpotSettings(
            type="hubspot", connection="c", object="deals", incremental={"lookback": "soon"}
        )
    parsed = HubSpotSettings(
        type="hubspot", connection="c", object="deals", incremental={"lookback": "1h"}
    )
    assert parsed.incremental is not None
    assert parsed.incremental.lookback.total_seconds() == 3600
    assert parsed.incremental.safety_lag.total_seconds() == 60


def test_the_test_data_has_25000_deals_12000_sharing_one_timestamp() -> None:
    deals = deals_dataset()
    assert len(deals) == 25_000
    stamps: dict[str, int] = {}
    for deal in deals:
        stamp = deal.properties["hs_lastmodifieddate"]
        stamps[stamp] = stamps.get(stamp, 0) + 1
    assert max(stamps.values()) == 12_000
