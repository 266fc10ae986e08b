"""Trading-session timetables on known dates: holidays, early closes, DST, demo clock."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from stockpipe.airflow.timetables import TradingMinuteTimetable, TradingSessionTimetable
from stockpipe.calendar import trading_calendar


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def sessions(timetable, first: datetime, last: datetime) -> list:
    restriction = TimeRestriction(first, last, catchup=True)
    infos, info = [], None
    while info := timetable.next_dagrun_info(
        last_automated_data_interval=info.data_interval if info else None, restriction=restriction
    ):
        infos.append(info)
    return infos


def test_calendar_known_days():
    nyse = trading_calendar("nyse")
    assert nyse.session(date(2026, 11, 26)) is None  # Thanksgiving
    assert nyse.session(date(2026, 4, 3)) is None  # Good Friday
    early = nyse.session(date(2026, 11, 27))
    assert early.early_close and early.close == utc(2026, 11, 27, 18, 0) and early.minutes == 210
    regular = nyse.session(date(2026, 11, 25))
    assert not regular.early_close and regular.minutes == 390
    # DST starts Sunday 2027-03-14: 09:30 ET is 14:30 UTC before, 13:30 UTC after
    assert nyse.session(date(2027, 3, 12)).open == utc(2027, 3, 12, 14, 30)
    assert nyse.session(date(2027, 3, 14)) is None
    assert nyse.session(date(2027, 3, 15)).open == utc(2027, 3, 15, 13, 30)


def test_session_timetable_skips_thanksgiving_and_honours_early_close():
    infos = sessions(TradingSessionTimetable("nyse"), utc(2026, 11, 25), utc(2026, 11, 30))
    days = [i.data_interval.start.date() for i in infos]
    assert days == [date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]
    assert infos[1].run_after == pendulum.datetime(2026, 11, 27, 18, 0)  # after the 13:00 ET close
    assert infos[0].run_after == pendulum.datetime(2026, 11, 25, 21, 0)
    assert infos[1].data_interval == DataInterval(pendulum.datetime(2026, 11, 27), pendulum.datetime(2026, 11, 28))


def test_session_timetable_good_friday_and_dst():
    easter = sessions(TradingSessionTimetable("nyse"), utc(2026, 4, 2), utc(2026, 4, 6))
    assert [i.data_interval.start.date() for i in easter] == [date(2026, 4, 2), date(2026, 4, 6)]
    dst = sessions(TradingSessionTimetable("nyse"), utc(2027, 3, 12), utc(2027, 3, 15))
    assert [i.run_after for i in dst] == [pendulum.datetime(2027, 3, 12, 21), pendulum.datetime(2027, 3, 15, 20)]


def test_minute_timetable_nyse():
    minute = TradingMinuteTimetable("nyse")
    # the last minutes of the early close, then straight to Monday's open (weekend)
    infos = sessions(minute, utc(2026, 11, 27, 17, 58), utc(2026, 11, 30, 14, 31))
    starts = [i.data_interval.start for i in infos]
    assert starts == [
        pendulum.datetime(2026, 11, 27, 17, 58),
        pendulum.datetime(2026, 11, 27, 17, 59),
        pendulum.datetime(2026, 11, 30, 14, 30),
        pendulum.datetime(2026, 11, 30, 14, 31),
    ]
    assert infos[0].run_after == pendulum.datetime(2026, 11, 27, 17, 59)  # once the bar has closed
    # Thanksgiving has no minute at all; the day before ends 16:00 ET
    day_before = sessions(minute, utc(2026, 11, 25, 20, 59), utc(2026, 11, 27, 14, 30))
    assert [i.data_interval.start for i in day_before] == [
        pendulum.datetime(2026, 11, 25, 20, 59),
        pendulum.datetime(2026, 11, 27, 14, 30),
    ]
    # DST: Monday 2027-03-15 opens 13:30 UTC; Good Friday has no minute
    assert sessions(minute, utc(2027, 3, 13), utc(2027, 3, 15, 13, 30))[0].data_interval.start == pendulum.datetime(
        2027, 3, 15, 13, 30
    )
    assert sessions(minute, utc(2026, 4, 3), utc(2026, 4, 6, 13, 30))[0].data_interval.start.date() == date(2026, 4, 6)


def test_minute_timetable_demo_runs_every_minute():
    infos = sessions(TradingMinuteTimetable("demo"), utc(2026, 11, 26, 3, 0), utc(2026, 11, 26, 3, 4))
    assert [i.data_interval.start.minute for i in infos] == [0, 1, 2, 3, 4]  # Thanksgiving night included


def test_no_catchup_starts_at_latest_minute(monkeypatch: pytest.MonkeyPatch):
    from stockpipe.airflow import timetables

    monkeypatch.setattr(timetables, "_now", lambda: utc(2026, 11, 27, 15, 0, 30))
    info = TradingMinuteTimetable("nyse").next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(utc(2026, 1, 1), None, catchup=False)
    )
    assert info.data_interval.start == pendulum.datetime(2026, 11, 27, 14, 59)
    session = TradingSessionTimetable("nyse").next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(utc(2026, 1, 1), None, catchup=False)
    )
    assert session.data_interval.start.date() == date(2026, 11, 25)  # last closed session


def test_manual_run_and_serialization():
    timetable = TradingSessionTimetable("nyse")
    interval = timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 26, 12))
    assert interval.start == pendulum.datetime(2026, 11, 25)
    assert TradingSessionTimetable.deserialize(timetable.serialize()) == timetable
    assert TradingMinuteTimetable.deserialize({"calendar": "demo"}).calendar_mode == "demo"


def test_plugin_registers_the_timetables():
    from airflow import plugins_manager

    registered = plugins_manager.get_timetables_plugins()
    assert "stockpipe.airflow.timetables.TradingMinuteTimetable" in registered
    assert "stockpipe.airflow.timetables.TradingSessionTimetable" in registered
