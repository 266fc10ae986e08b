"""Airflow glue: timetables, callbacks/notifiers and the task functions the DAGs call."""
