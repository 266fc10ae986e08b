"""Airflow timetables that follow the market's trading sessions (:mod:`stockpipe.calendar`).

* :class:`TradingMinuteTimetable` — one run per trading minute: data interval ``[m, m+1min)``, run
  once the minute has ended. On the ``demo`` calendar (the simulator's always-open market) that is
  every minute; on ``nyse`` only session minutes (no holidays, 13:00 ET early closes, DST-aware).
* :class:`TradingSessionTimetable` — one run per session, run after the session's close. The data
  interval is the session's *date* in UTC (midnight to midnight), which always contains the
  session, so ``airflow backfill create --from-date D1 --to-date D2`` covers D1..D2 inclusive and a
  run's ``logical_date.date()`` is its session date. Tasks look the session up with
  :func:`session_for_interval`.

Both are registered by ``plugins/stockpipe_plugin.py`` (Airflow only deserializes registered
custom timetables) and serialize to ``{"calendar": "nyse"|"demo"|null}``. Made without a calendar
(as the DAG files do), a timetable follows the pipeline's (:func:`market_calendar_mode`), read when
it first schedules, not when the DAG file is parsed: parsing reads no settings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime, instance

from stockpipe.calendar import MINUTE, CalendarMode, Session, TradingCalendar, trading_calendar

DAY = timedelta(days=1)


def market_calendar_mode() -> CalendarMode:
    """The calendar the pipeline trades on (:attr:`Settings.calendar_mode`: the simulator's clock, or
    NYSE with a market-data key)."""
    from stockpipe.config import get_settings

    return get_settings().calendar_mode


def _dt(value: datetime) -> DateTime:
    return instance(value.astimezone(UTC))


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class _TradingTimetable(Timetable):
    """Shared scheduling logic: subclasses define the interval grid."""

    periodic = True

    def __init__(self, calendar: CalendarMode | None = None) -> None:
        self._calendar = calendar  # None: the pipeline's, looked up when needed

    @property
    def calendar_mode(self) -> CalendarMode:
        return self._calendar or market_calendar_mode()

    # -- grid (subclasses) ---------------------------------------------------------------------
    def _first_at_or_after(self, ts: datetime) -> DagRunInfo | None:
        """The first run whose data interval starts at or after ``ts``."""
        raise NotImplementedError

    def _latest_done(self, now: datetime) -> DagRunInfo | None:
        """The last run that may already run at ``now`` (run_after <= now)."""
        raise NotImplementedError

    # -- Timetable API -------------------------------------------------------------------------
    @property
    def calendar(self) -> TradingCalendar:
        return trading_calendar(self.calendar_mode)

    @property
    def _calendar_label(self) -> str:
        return self._calendar or "the pipeline's calendar"

    def serialize(self) -> dict[str, Any]:
        return {"calendar": self._calendar}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls(calendar=data.get("calendar"))

    def validate(self) -> None:
        from airflow.exceptions import AirflowTimetableInvalid

        if self._calendar not in (None, "nyse", "demo"):
            raise AirflowTimetableInvalid(f"calendar must be 'nyse' or 'demo', not {self._calendar!r}")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._calendar == self._calendar  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._calendar))

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            info = self._first_at_or_after(last_automated_data_interval.end)
        elif restriction.earliest is not None:
            info = self._first_at_or_after(restriction.earliest)
        else:
            return None  # no start_date: nothing to schedule
        if info is None:
            return None
        if not restriction.catchup:
            # Live DAGs: skip missed intervals, start from the latest that may run now.
            latest = self._latest_done(_now())
            if latest is not None and latest.data_interval.start > info.data_interval.start:
                info = latest
        if restriction.latest is not None and info.data_interval.start > restriction.latest:
            return None
        return info


class TradingMinuteTimetable(_TradingTimetable):
    """Every trading minute; the run starts when the minute's bar has closed."""

    @property
    def summary(self) -> str:
        return f"every trading minute ({self._calendar_label})"

    description = "One run per trading minute of the market calendar (demo: every minute)."

    def _info(self, start: datetime) -> DagRunInfo:
        return DagRunInfo.interval(start=_dt(start), end=_dt(start + MINUTE))

    def _first_at_or_after(self, ts: datetime) -> DagRunInfo | None:
        start = self.calendar.next_trading_minute(ts)
        return self._info(start) if start is not None else None

    def _latest_done(self, now: datetime) -> DagRunInfo | None:
        start = self.calendar.previous_trading_minute(now - MINUTE)
        return self._info(start) if start is not None else None

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        latest = self._latest_done(run_after)
        return latest.data_interval if latest else DataInterval.exact(run_after)  # type: ignore[return-value]


class TradingSessionTimetable(_TradingTimetable):
    """One run per trading session, after its close; data interval = the session's UTC date."""

    @property
    def summary(self) -> str:
        return f"every trading session ({self._calendar_label})"

    description = "One run per trading session, after the close (holidays skipped, early closes honoured)."

    def _info(self, session: Session) -> DagRunInfo:
        start = _utc_midnight(session.day)
        return DagRunInfo(
            run_after=_dt(session.close),
            data_interval=DataInterval(_dt(start), _dt(start + DAY)),
        )

    def _first_at_or_after(self, ts: datetime) -> DagRunInfo | None:
        ts = ts.astimezone(UTC)
        day = ts.date() if ts == _utc_midnight(ts.date()) else ts.date() + DAY
        sessions = self.calendar.sessions_between(day, day + timedelta(days=14))
        if sessions:
            return self._info(sessions[0])
        later = self.calendar.next_session(_utc_midnight(day))
        return self._info(later) if later else None

    def _latest_done(self, now: datetime) -> DagRunInfo | None:
        for session in reversed(self.calendar.last_sessions(2, now)):
            info = self._info(session)
            if info.run_after <= now:
                return info
        return None

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        latest = self._latest_done(run_after)
        return latest.data_interval if latest else DataInterval.exact(run_after)  # type: ignore[return-value]


def session_for_interval(data_interval_start: datetime, calendar: CalendarMode | None = None) -> Session | None:
    """The session a :class:`TradingSessionTimetable` run is about (None: market closed that day)."""
    mode = calendar or market_calendar_mode()
    return trading_calendar(mode).session(data_interval_start.astimezone(UTC).date())
