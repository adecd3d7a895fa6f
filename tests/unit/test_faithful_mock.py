"""The mongomock every test uses refuses what a server refuses and gives back what PyMongo gives back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from bson.int64 import Int64
from pymongo.errors import DocumentTooLarge

from orchestrator.store.faithful_mock import MAX_DOCUMENT_BYTES, client


@pytest.fixture
def collection() -> Any:
    return client()["evenflow"]["things"]


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"_id": 1, "name": "bad\udcff"}, UnicodeEncodeError),
        ({"_id": 2, "n": 2**64}, OverflowError),
        ({"_id": 3, "blob": "x" * MAX_DOCUMENT_BYTES}, DocumentTooLarge),
        ({"_id": 4, "$set": 1}, InvalidDocument),
        ({"_id": 5, "nul\x00key": 1}, InvalidDocument),
        ({"_id": 6, "set": {1, 2}}, InvalidDocument),
    ],
    ids=["lone surrogate", "int over 64 bits", "over 16 MiB", "top-level $ key", "NUL in a key", "a set"],
)
def test_what_a_server_refuses_is_refused(collection: Any, doc: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        collection.insert_one(doc)
    assert collection.count_documents({}) == 0


def test_an_update_a_server_refuses_is_refused(collection: Any) -> None:
    collection.insert_one({"_id": 1})
    with pytest.raises(UnicodeEncodeError):
        collection.update_one({"_id": 1}, {"$set": {"name": "bad\udcff"}})
    with pytest.raises(UnicodeEncodeError):
        collection.find_one({"name": "bad\udcff"})


def test_values_come_back_typed_as_the_clients_codec_options_say(collection: Any) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    doc = {"_id": 1, "big": 2**40, "small": 7, "when": moment, "pair": (1, 2), "raw": b"\x00"}
    collection.insert_one(doc)
    collection.update_one({"_id": 1}, {"$set": {"later": 2**62}})
    found = collection.find_one({"_id": 1})
    assert found == {
        "_id": 1,
        "big": 2**40,
        "small": 7,
        "when": moment.replace(microsecond=678_000),
        "pair": [1, 2],
        "raw": b"\x00",
        "later": 2**62,
    }
    assert type(found["big"]) is int and type(found["later"]) is int  # evenflow's codec options
    assert found["when"].tzinfo is UTC


def test_without_evenflows_type_registry_big_ints_come_back_as_int64() -> None:
    plain = client(CodecOptions(tz_aware=True, tzinfo=UTC))["evenflow"]["things"]
    plain.insert_one({"_id": 1, "big": 2**40, "small": 7})
    found = plain.find_one({"_id": 1})
    assert type(found["big"]) is Int64 and type(found["small"]) is int


def test_a_filter_is_cut_to_milliseconds_as_a_server_cuts_it(collection: Any) -> None:
    collection.insert_one({"_id": 1, "when": datetime(2026, 1, 1, 0, 0, 0, 5_000, tzinfo=UTC)})
    later_in_the_same_ms = datetime(2026, 1, 1, 0, 0, 0, 5_999, tzinfo=UTC)
    assert collection.find_one({"when": {"$gte": later_in_the_same_ms}}) is not None


def test_an_aggregation_result_over_16_mib_is_refused(collection: Any) -> None:
    chunk = "x" * (1024 * 1024)
    collection.insert_many([{"_id": i, "chunk": chunk} for i in range(17)])
    with pytest.raises(DocumentTooLarge):
        list(collection.aggregate([{"$group": {"_id": None, "all": {"$push": "$chunk"}}}]))


def test_every_collection_of_the_client_is_faithful() -> None:
    made = client()
    for collection in (made["a"]["b"], made.get_database("c")["d"], made.e.f, made["a"]["b"].with_options()):
        with pytest.raises(OverflowError):
            collection.insert_one({"n": 2**64})
