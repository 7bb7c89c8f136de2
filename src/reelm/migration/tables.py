"""What a migration moves: every region table that holds a user's rows, and how its
protected columns are re-encrypted. A region table that is in neither list fails a test, so
a new table (likes, watch history...) cannot be forgotten by the migration."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Table

from reelm.storage.db import RegionBase


@dataclass(frozen=True)
class MovedTable:
    name: str
    user_column: str
    # Ciphertext column -> the field name its associated data binds (reelm/field/<user>/<f>).
    encrypted: dict[str, str]
    # Blind-index column -> the ciphertext column whose plaintext it indexes (region-keyed,
    # so recomputed with the destination's index key).
    indexes: dict[str, str] = field(default_factory=dict)
    # Lookup column -> the ciphertext column whose plaintext it indexes under a key derived
    # from the user's data key (UserCipher.lookup): recomputed with the new data key.
    lookups: dict[str, str] = field(default_factory=dict)
    # Columns that describe the row's place, not the user's data (not copied, not digested).
    local: tuple[str, ...] = ()

    @property
    def table(self) -> Table:
        return RegionBase.metadata.tables[self.name]


# In insertion order (sessions reference accounts); deletion goes the other way.
MOVED_TABLES: tuple[MovedTable, ...] = (
    MovedTable(
        "accounts",
        "user_id",
        {
            "email_ct": "email",
            "phone_ct": "phone",
            "birth_date_ct": "birth_date",
            "password_ct": "password",
            "settings_ct": "settings",
            "log_keys_ct": "log_keys",
        },
        indexes={"email_bidx": "email_ct", "phone_bidx": "phone_ct"},
        local=("migration", "index_epoch"),
    ),
    MovedTable("sessions", "user_id", {"user_agent_ct": "user_agent"}),
    MovedTable("uploads", "owner_id", {"metadata_ct": "upload_meta"}),
    MovedTable("videos", "owner_id", {"caption_ct": "caption"}),
    MovedTable("likes", "user_id", {"video_ct": "liked_video"}, lookups={"lookup": "video_ct"}),
    MovedTable("signals", "user_id", {"event_ct": "signal"}),
    MovedTable("notifications", "user_id", {"event_ct": "notification"}),
    MovedTable(
        "filed_reports",
        "user_id",
        {"report_ct": "filed_report", "note_ct": "report_note"},
        lookups={"lookup": "report_ct"},
    ),
)

# Region tables that stay, and why.
STAYING_TABLES: dict[str, str] = {
    "tlog_queue": "the region's transparency log: append-only history, ids only",
    "tlog_entries": "the region's transparency log: append-only history, ids only",
    "tlog_nodes": "the region's transparency log: hashes",
    "tlog_checkpoints": "the region's transparency log: signed tree heads",
    "alembic_version": "schema version",
    "index_epochs": "the region's blind-index key epochs: numbers and dates, no user's data",
    "engagement_outbox": "counts owed to the catalog (video, market, numbers; no user id), "
    "drained by the region where they were written",
    "intercell_outbox": "deliveries this region owes other cells, sent from here; a user's "
    "unsent ones are sealed under the user's key and go with the source's purge (a known gap: "
    "a delivery still unsent when its sender moves is lost)",
    "intercell_counts": "numbers of deliveries per hour, destination and kind: no user id",
    "intercell_receipts": "ids and digests of deliveries this region applied: no user data",
    "intercell_nonces": "signature nonces seen recently: random strings",
}
# procrastinate's tables stay too: a moving user's jobs are deleted from the source at the
# purge and made again in the destination from the videos' state at the switch.
STAYING_PREFIXES = ("procrastinate_",)
