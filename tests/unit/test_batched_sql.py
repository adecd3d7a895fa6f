"""``insert_rows`` writes what ``executemany`` of one row at a time writes, upserts included."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.store.batched_sql import MAX_VARIABLES, insert_rows

KEYS = st.integers(min_value=0, max_value=40)
ROWS = st.lists(st.tuples(KEYS, st.integers(min_value=-5, max_value=5)), max_size=900)
UPSERT = "ON CONFLICT (k) DO UPDATE SET n = n + excluded.n"


def table(key: str = "UNIQUE") -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t (k INTEGER {key}, n INTEGER NOT NULL)")
    return db


def contents(db: sqlite3.Connection) -> list[tuple[int, int, int]]:
    return db.execute("SELECT rowid, k, n FROM t ORDER BY rowid").fetchall()


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_upserts_in_chunks_sum_as_one_row_at_a_time(rows: list[tuple[int, int]]) -> None:
    one_by_one, chunked = table(), table()
    one_by_one.executemany(f"INSERT INTO t (k, n) VALUES (?, ?) {UPSERT}", rows)
    insert_rows(chunked, "INSERT INTO t (k, n)", iter(rows), UPSERT)
    assert contents(chunked) == contents(one_by_one)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=3 * MAX_VARIABLES))
def test_plain_inserts_keep_their_order_across_chunk_edges(count: int) -> None:
    db = table(key="")
    insert_rows(db, "INSERT INTO t (k, n)", ((k, -k) for k in range(count, 0, -1)))
    assert contents(db) == [(i + 1, count - i, i - count) for i in range(count)]


def test_a_row_of_another_width_is_refused_before_anything_is_written() -> None:
    db = table(key="")
    with pytest.raises(ValueError, match="a row of 3 values for the 2 columns"):
        insert_rows(db, "INSERT INTO t (k, n)", [(1, 1), (2, 2, 2)])
    assert contents(db) == []
