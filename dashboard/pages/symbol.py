"""Symbol: candlesticks + volume, indicator overlays, RSI and MACD panels, company metadata."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui

settings = data.settings()
OVERLAYS = ["SMA 20", "SMA 50", "EMA 12", "EMA 26", "Bollinger"]


def page() -> None:
    symbols = data.known_symbols(tuple(settings.watchlist))
    wanted = st.query_params.get("symbol", symbols[0]).upper()
    if wanted not in symbols and data.streamed_symbol(wanted):  # a Market-page link beyond the watchlist
        symbols = [*symbols, wanted]
    left, middle, right = st.columns([1, 2, 3])
    symbol = left.selectbox("Symbol", symbols, index=symbols.index(wanted) if wanted in symbols else 0, key="symbol")
    st.query_params["symbol"] = symbol
    range_key = middle.radio("Range", list(data.RANGES), horizontal=True, key="range")
    overlays = right.multiselect("Overlays", OVERLAYS, default=["SMA 20", "SMA 50", "Bollinger"], key="overlays")

    meta = data.symbol_metadata(symbol)
    st.title(f"{symbol} · {meta['name']}" if meta.get("name") else symbol)
    facts = [meta.get(k) for k in ("exchange", "currency", "type") if meta.get(k)]
    if meta.get("market_cap"):
        facts.append(f"market cap {meta['market_cap'] / 1e9:,.1f} B")
    if meta.get("homepage_url"):
        facts.append(f"[{meta['homepage_url']}]({meta['homepage_url']})")
    if facts:
        st.caption(" · ".join(str(f) for f in facts))

    frame = data.price_history(symbol, range_key)
    if frame.empty:
        ui.empty_state(f"No bars for {symbol} yet.")
        return
    first, last = frame.iloc[0], frame.iloc[-1]
    cols = st.columns(5)
    cols[0].metric("Last", f"{last['close']:,.2f}")
    cols[1].metric(
        f"Change {range_key}",
        f"{last['close'] - first['open']:+,.2f}",
        f"{(last['close'] / first['open'] - 1) * 100:+.2f}%",
    )
    cols[2].metric("High", f"{frame['high'].max():,.2f}")
    cols[3].metric("Low", f"{frame['low'].min():,.2f}")
    cols[4].metric("Volume", f"{frame['volume'].sum():,.0f}")
    rng = data.RANGES[range_key]
    try:
        alerts = data.chart_alerts(symbol, first["ts"].to_pydatetime(), last["ts"].to_pydatetime())
    except data.SchemaMissing:  # a database from before the alerts migration: the chart without markers
        alerts = None
    st.plotly_chart(charts.price_chart(frame, symbol, set(overlays), alerts=alerts), width="stretch", key="price-chart")
    source = (
        "stored 1-minute indicators (market.indicators_1m)"
        if range_key == "1D"
        else f"indicators computed on the {rng.label} by stockpipe.indicators"
    )
    st.caption(
        f"{len(frame):,} {rng.label} from {ui.ny_stamp(first['ts'])} to {ui.ny_stamp(last['ts'])} "
        f"({rng.rollup}); {source}. Gaps: indicators still warming up."
    )
    with st.expander("Company"):
        if meta.get("description"):
            st.write(meta["description"])
        st.json({k: str(v) for k, v in meta.items() if k != "description"}, expanded=False)


def guarded_page() -> None:
    if not data.has_market_data():
        ui.empty_state()
        return
    page()


ui.guarded(guarded_page)
