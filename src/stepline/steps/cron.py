"""Cron expressions: 5 fields (minute first) or 6 fields (seconds first), in a time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter


class CronSchedule:
    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(f"{expression!r} has {len(fields)} fields; a cron expression has 5 or 6")
        self.expression = expression
        self.zone = ZoneInfo(timezone)
        self._seconds_first = len(fields) == 6
        try:
            croniter(expression, second_at_beginning=self._seconds_first)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{expression!r} is not a valid cron expression ({exc})") from None

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (an aware datetime), as an aware datetime."""
        local = moment.astimezone(self.zone)
        it = croniter(self.expression, local, second_at_beginning=self._seconds_first)
        result: datetime = it.get_next(datetime)
        return result

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The newest tick at or before `moment`."""
        local = moment.astimezone(self.zone)
        it = croniter(self.expression, local, second_at_beginning=self._seconds_first)
        if it.match(self.expression, local, second_at_beginning=self._seconds_first):
            # The tick itself, not the moment inside it: every worker must name a tick the same way,
            # or the cron lock sees two ticks where there is one.
            return local.replace(microsecond=0) if self._seconds_first else local.replace(second=0, microsecond=0)
        result: datetime = it.get_prev(datetime)
        return result
