"""Sampling, thresholding and (other)-row data loss: a warning per chunk, naming its dates."""

from __future__ import annotations

import pytest

from airflow_dataflow.connectors.base import Cursor
from airflow_dataflow.errors import SourceError
from tests.connectors import ga4_support
from tests.connectors.ga4_support import read, records, warnings
from tests.fakes.ga4 import FakeGA4

ga4 = ga4_support.ga4  # fixtures
ga4_conn = ga4_support.ga4_conn


def test_sampling_adds_a_warning_naming_the_chunk(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.sampled = {"2024-03-02"}
    items = read(ga4_conn, page_size=3)  # several pages of the chunk: still one warning
    [warning] = warnings(items)
    assert "GA4 property 123456789 sampled the report for 2024-03-02" in warning
    assert "2,500,000 of 10,000,000 samples read, 25.0%" in warning
    assert len(records(items)) == 12  # sampled rows are still delivered


def test_sampling_names_a_weekly_chunk_by_its_dates(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.sampled = {"2024-03-05"}
    items = read(ga4_conn, chunk="week", date_range={"start": "2024-03-01", "end": "2024-03-13"})
    [warning] = warnings(items)
    assert "sampled the report for 2024-03-04..2024-03-10" in warning


def test_on_sampling_fail_fails_the_run_on_a_sampled_chunk(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.sampled = {"2024-03-02"}
    cursor = Cursor("date")
    with pytest.raises(SourceError) as caught:
        read(ga4_conn, cursor, on_sampling="fail")
    message = str(caught.value)
    assert "sampled the report for 2024-03-02" in message
    assert "source.on_sampling is fail" in message
    assert cursor.last_value == "2024-03-01"  # the days before were read whole


def test_thresholding_adds_a_warning_naming_the_chunk(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.thresholded = {"2024-03-03"}
    [warning] = warnings(read(ga4_conn))
    assert "GA4 property 123456789 applied thresholding to the report for 2024-03-03" in warning


def test_other_row_data_loss_adds_a_warning_naming_the_chunk(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.other_row_limit = 3
    found = warnings(read(ga4_conn, date_range={"start": "2024-03-01", "end": "2024-03-02"}))
    assert len(found) == 2
    assert "grouped rows into (other) for 2024-03-01 (dataLossFromOtherRow)" in found[0]
    assert "grouped rows into (other) for 2024-03-02 (dataLossFromOtherRow)" in found[1]


def test_a_clean_report_has_no_warnings(ga4: FakeGA4, ga4_conn: str) -> None:
    assert warnings(read(ga4_conn)) == []
