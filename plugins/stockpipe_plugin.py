"""Registers stockpipe's trading-session timetables with Airflow (it deserializes only registered ones).

Kept thin: everything lives in the ``stockpipe`` package (``plugins/.airflowignore`` keeps Airflow's
plugin scan out of it).
"""

from airflow.plugins_manager import AirflowPlugin

from stockpipe.airflow.timetables import TradingMinuteTimetable, TradingSessionTimetable


class StockpipePlugin(AirflowPlugin):
    name = "stockpipe"
    timetables = [TradingMinuteTimetable, TradingSessionTimetable]
