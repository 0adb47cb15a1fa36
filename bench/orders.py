"""Synthetic order records shared by the delivery benchmarks (ledger, destinations)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

STATUSES = ["paid", "paid", "paid", "shipped", "shipped", "refunded", "cancelled", "pending"]
CURRENCIES = ["EUR", "USD", "GBP", "SEK", "PLN"]
COUNTRIES = ["DE", "FR", "IT", "ES", "NL", "US", "GB", "CA", "BR", "JP", "IN", "AU", "SE", "PL"]
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def make_order(n: int, rng: random.Random) -> dict[str, Any]:
    """Order ``n``: 8 fields, ~155 bytes of JSON."""
    created = EPOCH + timedelta(seconds=rng.randrange(0, 30_000_000))
    return {
        "id": n,
        "customer_id": rng.randrange(1, 200_000),
        "status": rng.choice(STATUSES),
        "amount": round(rng.uniform(1, 2000), 2),
        "currency": rng.choice(CURRENCIES),
        "country": rng.choice(COUNTRIES),
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sku": f"SKU-{rng.randrange(100_000):05d}",
    }


def generate_orders(count: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for n in range(count):
        yield make_order(n, rng)
