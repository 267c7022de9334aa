"""The retention rules as values, and the calendar arithmetic they need.

MISSION "Storage and retention": messages are kept ten years; a closed mailbox is
deleted three months after a deletion request, or after the archive period otherwise; a
mailbox with no login for a year is warned, then closed; functional logs are kept six
months. Every duration is configurable (`[retention]` in hygie.toml). Years and months
are calendar ones: ten years after 29 February 2016 is 28 February 2026.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Literal

ALL_KINDS = frozenset({"PER", "ORG", "APP", "CAB", "PAT"})
ClosureKind = Literal["deletion", "archive", "inactivity"]
CLOSURE_KINDS: tuple[ClosureKind, ...] = ("deletion", "archive", "inactivity")


def add_months(when: datetime, months: int) -> datetime:
    """`when` moved by whole calendar months (negative: back), clamped to the month's end."""
    index = when.year * 12 + (when.month - 1) + months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class RetentionPolicy:
    message_years: int = 10
    deletion_months: int = 3
    archive_months: int = 12
    inactivity_months: int = 12
    grace_days: int = 30
    functional_log_months: int = 6
    batch_size: int = 1000
    inactivity_kinds: frozenset[str] = field(default=ALL_KINDS)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RetentionPolicy:
        """From the `[retention]` settings (extra keys, such as the interval, are ignored)."""
        known = {f.name for f in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in known}
        kinds = chosen.get("inactivity_kinds")
        if isinstance(kinds, str):
            chosen["inactivity_kinds"] = frozenset(
                part.strip().upper() for part in kinds.split(",") if part.strip()
            )
        return cls(**chosen)

    def message_cutoff(self, now: datetime) -> datetime:
        """Messages received before this instant have been kept long enough."""
        return add_months(now, -12 * self.message_years)

    def deletion_due(self, kind: ClosureKind, closed_at: datetime) -> datetime:
        months = self.deletion_months if kind == "deletion" else self.archive_months
        return add_months(closed_at, months)

    def inactivity_cutoff(self, now: datetime) -> datetime:
        """No login since before this instant: the mailbox is inactive."""
        return add_months(now, -self.inactivity_months)

    def grace_cutoff(self, now: datetime) -> datetime:
        """Warned before this instant and still no login: the mailbox is closed."""
        return now - timedelta(days=self.grace_days)

    def closure_after_warning(self, warned_at: datetime) -> datetime:
        return warned_at + timedelta(days=self.grace_days)

    def log_cutoff(self, now: datetime) -> datetime:
        return add_months(now, -self.functional_log_months)
