"""Overview: one live tile per watchlist symbol, and the market clock."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from stockpipe.calendar import NEW_YORK

settings = data.settings()
watchlist = tuple(settings.watchlist)
TILES_PER_ROW = 5

st.title("Watchlist")
st.caption(ui.market_status(settings))


def tile(
    symbol: str,
    row: dict | None,
    source: str,
    spark: pd.DataFrame,
    alert: dict | None = None,
    design: dict | None = None,
) -> None:
    with st.container(border=True, key=f"tile-{symbol}"):
        if row is None:
            st.metric(symbol, "—")
            st.caption("no bar yet")
            return
        close, ts = float(row["close"]), pd.Timestamp(row["ts"])
        day_start = ts.tz_convert(NEW_YORK).normalize().tz_convert("UTC").to_pydatetime()
        try:
            previous = data.previous_close(symbol, day_start)
        except data.ServiceDown:
            previous = None  # the banner above already says PostgreSQL is down
        delta = None
        if previous:
            delta = f"{close - previous:+,.2f} ({(close / previous - 1) * 100:+.2f}%)"
        st.metric(symbol, f"{close:,.2f}", delta, help="change vs the previous session's close")
        volume = row.get("volume")
        st.markdown(
            f"Vol **{volume:,.0f}** · {ui.rsi_state(row.get('rsi_14'))}"
            if volume is not None
            else ui.rsi_state(row.get("rsi_14"))
        )
        points = spark[spark["symbol"] == symbol] if not spark.empty else spark
        if not points.empty and points["ts"].iloc[-1] < ts:  # Redis is ahead of the cached history
            points = pd.concat([points, pd.DataFrame([{"symbol": symbol, "ts": ts, "close": close}])])
        if len(points) > 1:
            rising = None if previous is None else close >= previous
            st.plotly_chart(
                charts.sparkline(points, rising),
                config={"displayModeBar": False, "staticPlot": True},
                key=f"spark-{symbol}",
            )
        st.caption(f"bar {ui.ny_stamp(ts)} · from {source}")
        if design:  # the polling plan's promise: how stale this symbol is by design
            st.caption(
                f"polled every {design['every_s']:.0f} s · ~{design['mean_s']:.0f} s after the close "
                f"(≤ {design['max_s']:.0f} s)",
                help="By design of the producer's polling plan under the API budget (STOCKPIPE_RATE_LIMIT_PER_MINUTE)",
            )
        if alert is not None:
            st.caption(f":material/notifications_active: {alert['description']} · {ui.ny_stamp(alert['ts'])}")


@st.fragment(run_every=settings.dashboard_refresh_s)
def live_tiles() -> None:
    ui.guarded(tiles)  # inside the fragment: its reruns must show a banner too, never a traceback


def tiles() -> None:
    latest = data.latest(watchlist)
    for error in latest.down:
        ui.down_banner(error)
    if not latest.rows:
        if not any(e.service == "PostgreSQL" for e in latest.down):
            ui.empty_state()
        return
    try:
        spark = data.sparklines(watchlist)
    except data.ServiceDown:
        spark = pd.DataFrame(columns=["symbol", "ts", "close"])
    try:
        alerts = data.latest_alerts(watchlist)
    except data.ServiceDown:
        alerts = {}
    try:
        design = data.stale_by_design()
    except data.ServiceDown:
        design = {}
    for first in range(0, len(watchlist), TILES_PER_ROW):
        row_symbols = watchlist[first : first + TILES_PER_ROW]
        for column, symbol in zip(st.columns(TILES_PER_ROW), row_symbols, strict=False):
            with column:
                tile(
                    symbol,
                    latest.rows.get(symbol),
                    latest.source.get(symbol, ""),
                    spark,
                    alerts.get(symbol),
                    design.get(symbol),
                )


live_tiles()
