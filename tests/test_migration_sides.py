"""The migration engine split by side: what the coordinator, the source's exporter and the
destination's importer send each other survives a JSON round trip, and a whole migration runs
with each side holding its own region only (any touch of the other region's cell fails)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.migration import engine
from reelm.migration.exporter import Exporter
from reelm.migration.importer import Importer
from reelm.migration.messages import (
    BlobCheck,
    Digests,
    ExportBatch,
    Fingerprint,
    ImportReceipt,
    Message,
    MessageError,
    Survey,
    decode,
    encode,
)
from reelm.migration.report import platform_fetcher, platform_keys, verify_report
from reelm.migration.transport import LocalTransport, confined
from reelm.regions.cell import NotInThisCell
from reelm.social import likes

from . import tus
from .test_migration import (
    MARKETS,
    _holds_anything,
    _person,
    _run_jobs,
    _state_of,
    clip,  # noqa: F401  (the fixture)
)

USER = uuid.UUID("6f1c0c1e-8a53-4c4b-9a57-4d0f3f9b2c11")
WHEN = datetime(2026, 12, 3, 17, 4, 5, 123456, tzinfo=UTC)


def _round_trip(message: Message) -> Message:
    text = message.to_json()
    json.loads(text)  # plain JSON: what an HTTP transport carries
    return type(message).from_json(text)


def test_messages_survive_a_json_round_trip() -> None:
    rows = {
        "accounts": [
            {
                "user_id": USER,
                "email_ct": "ana@example.com",  # in the clear, as exported
                "phone_ct": None,
                "created_at": WHEN,
                "purge_after": None,
                "migration": "frozen",
                "index_epoch": 3,
            }
        ],
        "videos": [
            {
                "id": uuid.uuid4(),
                "renditions": [{"height": 720, "bytes": 1234, "$map": "not a tag"}],
                "original_sha": b"\x00\xffbytes",
                "duration": 1.25,
                "published": True,
                "day": date(2026, 1, 2),
                "price": Decimal("1.10"),
                "tags": {"$uuid": "JSONB that looks like a tag"},
            }
        ],
    }
    batch = ExportBatch(uuid.uuid4(), {USER: rows}, {USER: 2}, {uuid.uuid4(): "why"})
    back = _round_trip(batch)
    assert back == batch
    assert isinstance(back, ExportBatch)
    video = back.users[USER]["videos"][0]
    assert isinstance(video["id"], uuid.UUID) and isinstance(video["original_sha"], bytes)
    assert video["day"] == date(2026, 1, 2) and video["price"] == Decimal("1.10")
    assert back.users[USER]["accounts"][0]["created_at"] == WHEN
    outline = {
        "user": str(USER),
        "tables": {"accounts": "ab"},
        "blobs": {"k": {"sha256": "cd", "size": 7}},
        "staged": {},
    }
    fingerprint = Fingerprint.of(b"\x01" * 32, outline)
    for message in (
        ImportReceipt(uuid.uuid4(), [USER], {uuid.uuid4(): "clash"}),
        BlobCheck((123, WHEN), "aa", "bb", 123),
        Digests(uuid.uuid4(), {USER: fingerprint}, {uuid.uuid4(): "gone"}),
        Survey([USER], {"accounts": 1}, 99),
    ):
        assert _round_trip(message) == message
    assert fingerprint.blobs == 1 and fingerprint.blob_bytes == 7


@pytest.mark.parametrize(
    "text",
    [
        b'{"migration_id": {"$uuid": "6f1c0c1e-8a53-4c4b-9a57-4d0f3f9b2c11"}, "imported": [], '
        b'"failed": {"a": 1}}',  # an untagged map
        b'{"migration_id": {"$uuid": "6f1c0c1e-8a53-4c4b-9a57-4d0f3f9b2c11"}, "imported": [], '
        b'"failed": {"$nope": 1}}',  # an unknown tag
        b'{"migration_id": {"$uuid": "6f1c0c1e-8a53-4c4b-9a57-4d0f3f9b2c11"}}',  # fields missing
        b'{"migration_id": {"$uuid": "not a uuid"}, "imported": [], "failed": {"$map": {}}}',
    ],
)
def test_a_malformed_message_is_refused(text: bytes) -> None:
    with pytest.raises(MessageError, match="malformed"):
        ImportReceipt.from_json(text)


class Tripwire:
    """Another region's cell as a side must never see it: any use of it fails the test."""

    def __init__(self, region: str) -> None:
        self._region = region

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a side touched {self._region}.{name}")


class Wire:
    """A side reached as over a network: every argument and answer goes through its JSON form
    (what a transport between cell processes carries), so what is lost there fails here."""

    def __init__(self, side: object) -> None:
        self._side = side

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._side, name)
        if not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            sent = [decode(json.loads(json.dumps(encode(a)))) for a in args]
            return decode(json.loads(json.dumps(encode(attr(*sent)))))

        return call


def _one_side(platform: Platform, own: str, other: str) -> Platform:
    view = confined(platform, own)
    return dataclasses.replace(view, cells={**view.cells, other: Tripwire(other)})  # type: ignore[dict-item]


def test_each_side_holds_its_own_region_only(
    platform_factory: Callable[..., Platform],
    clip: Path,  # noqa: F811
) -> None:
    platform = platform_factory(markets=MARKETS)
    token, user = _person(platform, phone="+1 202 555 0148")
    ingest(platform, user, clip, UploadMeta(caption="mine 🌊", visibility="private"))
    public = ingest(platform, user, clip, UploadMeta(caption="public #sea", visibility="public"))
    _run_jobs(platform, "sg")
    likes.like(platform, user, public)
    data = clip.read_bytes()
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        created = tus.create(http, token, len(data), caption="half", visibility="private")
        assert created.status_code == 201, created.text
        assert tus.patch(http, token, created.headers["Location"], 0, data[:100]).status_code == 204
    before = _state_of(platform, user.user_id)

    source, destination = _one_side(platform, "sg", "us"), _one_side(platform, "us", "sg")
    # The views refuse the other region however it is reached.
    with pytest.raises(AssertionError):
        source.cell("us").db  # noqa: B018
    with pytest.raises(NotInThisCell):
        confined(platform, "sg").cell("us")
    with pytest.raises(Exception, match="us"):
        source.settings.staging_dir("us")
    sides = LocalTransport(Exporter(source, "sg"), Importer(destination, "us"))
    sides.source, sides.destination = Wire(sides.source), Wire(sides.destination)  # type: ignore[assignment]

    def transports(src: str, dst: str) -> LocalTransport:
        # The plan asks every other region who of them would move; only sg has anyone.
        assert dst == "us"
        return sides if src == "sg" else LocalTransport.between(platform, src, dst)

    plan = engine.make_plan(platform, "us", user_ids=[user.user_id], transports=transports)
    assert plan.users == {"sg": [user.user_id]}
    migration_id = engine.start(platform, plan)
    outcome = engine.Runner(platform, migration_id, transports=transports).run()
    assert outcome.failed == {} and outcome.moved == 1 and outcome.unreadable == {}
    after = _state_of(platform, user.user_id)
    assert after["home"] == "us"
    assert {k: v for k, v in after.items() if k != "home"} == {
        k: v for k, v in before.items() if k != "home"
    }
    assert _holds_anything(platform, "sg", user.user_id) == []
    assert outcome.report is not None
    assert verify_report(outcome.report, platform_keys(platform), platform_fetcher(platform)) == []
