"""Pipeline: the producer's cycles, streaming micro-batches, stream lag, dead letters, freshness,
Airflow DAG runs."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

settings = data.settings()
WINDOWS = {
    "15 min": timedelta(minutes=15),
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
    "7 d": timedelta(days=7),
}

st.title("Pipeline")


PRODUCER_MODES = {
    "service": "a long-running service that Airflow's `market_producer` DAG keeps alive",
    "airflow": "`market_ingest`'s runs, one cycle a minute",
    "supervisor": "supervisord's `producer` program",
}


def producer() -> None:
    st.subheader("Producer")
    cycles = data.ingest_cycles(30)
    who = PRODUCER_MODES.get(settings.producer_mode, settings.producer_mode)
    if cycles.empty:
        st.info(f"No producer cycle recorded yet (`ops.ingest_cycles`). The producer runs as {who}.")
        return
    finished = pd.to_datetime(cycles["finished_at"], utc=True)
    age = pd.Timestamp.now(tz="UTC") - finished.iloc[0]
    limit = timedelta(seconds=settings.health_max_cycle_age_s)
    cols = st.columns(4)
    cols[0].metric("Last cycle", ui.duration(age), "stale" if age > limit else None, delta_color="inverse")
    cols[1].metric("Bars sent", f"{int(cycles['bars_sent'].sum()):,}", help=f"over the last {len(cycles)} cycles")
    failed = int(cycles["failed_symbols"].map(len).sum())
    cols[2].metric("Failed fetches", f"{failed:,}", help=f"of {int(cycles['symbols'].sum()):,} symbol fetches")
    cols[3].metric("Cycle time p50", f"{cycles['duration_s'].median():.1f} s")
    table = pd.DataFrame(
        {
            "finished": [ui.ny_stamp(t) for t in finished],
            "run": cycles["run_id"],
            "symbols": cycles["symbols"],
            "fetched": cycles["bars_fetched"],
            "sent": cycles["bars_sent"],
            "dead letters": cycles["dead_letters"],
            "failed symbols": [", ".join(f) for f in cycles["failed_symbols"]],
            "seconds": cycles["duration_s"].round(1),
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", key="ingest-cycles")
    st.caption(
        f"The producer runs as {who} (STOCKPIPE_PRODUCER_MODE={settings.producer_mode}); one row per cycle. "
        f"stream_health fails when none finished for {ui.duration(limit)} during a session."
    )


def streaming() -> None:
    st.subheader("Streaming job")
    last = data.last_batch(settings.stream_query_name)
    if last is None:
        ui.empty_state(f"No micro-batch of `{settings.stream_query_name}` yet.")
        return
    cols = st.columns(5)
    age = last["age"]
    stale = pd.Timedelta(age).total_seconds() > settings.health_max_batch_age_s
    cols[0].metric("Last batch age", ui.duration(age), "stale" if stale else None, delta_color="inverse")
    cols[1].metric(
        "Last batch",
        f"#{int(last['batch_id'])}",
        help=f"{int(last['rows_in'])} rows in, {int(last['bars_upserted'])} bars upserted",
    )
    cols[2].metric("Latency p50", f"{last['latency_p50_ms']:,.0f} ms" if pd.notna(last["latency_p50_ms"]) else "—")
    cols[3].metric("Latency p95", f"{last['latency_p95_ms']:,.0f} ms" if pd.notna(last["latency_p95_ms"]) else "—")
    cols[4].metric("Dead letters (stream)", f"{int(last['dead_letters']):,}")
    window = st.radio("Window", list(WINDOWS), index=1, horizontal=True, key="window")
    batches = data.stream_batches(settings.stream_query_name, WINDOWS[window])
    if batches.empty:
        st.info(f"No micro-batch in the last {window}; the last one committed {ui.ny_stamp(last['committed_at'])}.")
    else:
        st.plotly_chart(charts.batches_chart(batches), width="stretch", key="batches-chart")
        st.caption(
            f"{int(batches['batches'].sum()):,} micro-batches, {int(batches['rows_in'].sum()):,} rows in "
            f"the last {window}; p50 is the mean of the batches' p50s, p95 their max, per bucket."
        )


def freshness() -> None:
    st.subheader("Freshness per symbol")
    symbols = data.known_symbols(tuple(settings.watchlist))
    frame = data.freshness(tuple(symbols))
    limit = timedelta(seconds=settings.health_max_bar_age_s)
    table = pd.DataFrame(
        {
            "symbol": frame["symbol"],
            "last bar": [ui.ny_stamp(t) for t in frame["last_bar"]],
            "age": [ui.duration(a) for a in frame["bar_age"]],
            "fresh": [pd.notna(a) and pd.Timedelta(a) <= limit for a in frame["bar_age"]],
            "written": [ui.ny_stamp(t) for t in frame["written_at"]],
            "source": frame["source"],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", key="freshness")
    st.caption(
        f"fresh: the newest stored bar is at most {ui.duration(limit)} old (STOCKPIPE_HEALTH_MAX_BAR_AGE_S); "
        "outside trading sessions stale is expected."
    )
    checks = data.health_checks()
    if not checks.empty:
        with st.expander(f"stream_health checks ({int((~checks['ok']).sum())} failing)"):
            st.dataframe(checks, hide_index=True, width="stretch")


def kafka() -> None:
    st.subheader("Kafka: stream lag and dead letters")
    left, right = st.columns(2)
    lag = data.stream_lag()
    with left:
        if lag.empty:
            st.info(f"Topic `{settings.kafka_topic}` does not exist yet on {settings.kafka_bootstrap}.")
        else:
            processed = lag["processed"].notna().any()
            st.metric(
                "Messages waiting",
                f"{int(lag['lag'].sum()):,}",
                None if processed else "no committed batch yet",
                delta_color="off",
            )
            st.plotly_chart(charts.lag_chart(lag, "Stream lag per partition"), width="stretch", key="lag-chart")
    with right:
        total, letters = data.dead_letters(20)
        st.metric(f"Dead letters on {settings.kafka_dlq_topic}", f"{total:,}")
        if letters.empty:
            st.caption("No dead letters.")
        else:
            st.dataframe(letters, hide_index=True, width="stretch", key="dead-letters")


def airflow() -> None:
    st.subheader("Airflow DAG runs")
    runs = data.airflow_dag_runs()
    if runs.empty:
        st.info("Airflow answers, but no DAG has run yet.")
        return
    counts = runs["state"].value_counts()
    st.caption(" · ".join(f"{state}: {n}" for state, n in counts.items()) + f" — {data.airflow_url(settings)}")
    st.dataframe(
        runs,
        hide_index=True,
        width="stretch",
        key="dag-runs",
        column_config={"link": st.column_config.LinkColumn("open", display_text="Airflow UI")},
    )


def storage() -> None:
    st.subheader("Storage")
    summary = data.storage_summary()
    days = settings.retention_days
    cols = st.columns(4)
    cols[0].metric("Database size", f"{summary['database_bytes'] / 1e9:,.2f} GB")
    cols[1].metric("Bars + indicators", f"{summary['market_bytes'] / 1e9:,.2f} GB", help="partitions and indexes")
    cols[2].metric("Days kept", "—" if summary["days_kept"] is None else f"{summary['days_kept']:,}")
    cols[3].metric("Retention", f"{days} days" if days else "keep all", help="STOCKPIPE_RETENTION_DAYS")
    oldest, newest = summary["oldest_bar"], summary["newest_bar"]
    st.caption(
        f"Bars from {ui.ny_stamp(oldest)} to {ui.ny_stamp(newest)}. "
        + (
            f"postgres_maintenance drops what is older than {days} days every night"
            + (" (the market-wide mode's bounded default)." if settings.market_wide else ".")
            if days
            else "Nothing is dropped: set STOCKPIPE_RETENTION_DAYS to bound the disk "
            "(10,000 symbols: ~1.4 GB a session)."
        )
    )


for section in (producer, streaming, freshness, kafka, airflow, storage):
    ui.guarded(section)
