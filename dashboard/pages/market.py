"""Market: the whole streamed universe at a glance — today's top gainers and losers, RSI extremes
and the MACD crossovers of the last 15 minutes; each symbol links to its chart (Symbol page).

Everything comes from ``market.latest_1m`` (one row per symbol, kept by the sink) and the last
minutes of ``market.indicators_1m`` (see stockpipe.storage.market): 10,000 symbols render in well
under a second (bench/dashboard.py --market)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

settings = data.settings()
TOP = 20
RSI_LOW, RSI_HIGH = 30.0, 70.0
CROSS_MINUTES = 15

st.title("Market")


def table(frame: pd.DataFrame, columns: dict[str, str], key: str, empty: str) -> None:
    """``frame`` with its ``chart`` link as the symbol column (opens the Symbol page)."""
    if frame.empty:
        st.caption(empty)
        return
    shown = pd.DataFrame({"symbol": frame["chart"]})
    config: dict = {"symbol": st.column_config.LinkColumn("symbol", display_text=r"symbol=(.*)$", width="small")}
    for name, label in columns.items():
        if name == "change":
            shown[label] = frame[name].astype(float) * 100
            config[label] = st.column_config.NumberColumn(label, format="%+.2f %%")
        elif name == "ts":
            shown[label] = [ui.ny_time(t) for t in frame[name]]
        elif name in ("close", "prev_close", "macd", "macd_signal"):
            shown[label] = frame[name].astype(float)
            config[label] = st.column_config.NumberColumn(label, format="%.4g" if name.startswith("macd") else "%.2f")
        elif name == "rsi_14":
            shown[label] = frame[name].astype(float)
            config[label] = st.column_config.NumberColumn(label, format="%.1f")
        elif name == "volume":
            shown[label] = frame[name].astype(float)
            config[label] = st.column_config.NumberColumn(label, format="%,.0f")
        else:
            shown[label] = frame[name]
    st.dataframe(shown, hide_index=True, width="stretch", column_config=config, key=key)


def page() -> None:
    view = data.market_view(TOP, RSI_LOW, RSI_HIGH, CROSS_MINUTES)
    if view.session is None:
        ui.empty_state("No streamed bar yet.")
        return
    st.caption(
        f"**{view.symbols:,}** symbols traded in the session of **{view.session:%a %d %b %Y}** · newest bar "
        f"{ui.ny_stamp(view.as_of)} · change = latest close vs the symbol's previous session close · "
        f"{ui.market_status(settings)}"
    )
    movers = {"change": "change", "close": "last", "prev_close": "prev close", "volume": "volume", "rsi_14": "RSI"}
    left, right = st.columns(2)
    with left:
        st.subheader("Top gainers")
        table(view.gainers, movers, "gainers", "No symbol with a previous close yet.")
    with right:
        st.subheader("Top losers")
        table(view.losers, movers, "losers", "No symbol with a previous close yet.")

    rsi = {"rsi_14": "RSI", "close": "last", "change": "change", "ts": "bar"}
    left, right = st.columns(2)
    with left:
        st.subheader(f"RSI ≤ {RSI_LOW:g} · {view.oversold_count:,}")
        table(view.oversold, rsi, "oversold", "None oversold.")
    with right:
        st.subheader(f"RSI ≥ {RSI_HIGH:g} · {view.overbought_count:,}")
        table(view.overbought, rsi, "overbought", "None overbought.")

    st.subheader(f"MACD crossovers, last {CROSS_MINUTES} minutes")
    st.caption("The MACD line crossed its signal line between two consecutive bars (the histogram changed sign).")
    crossings = {"ts": "bar", "macd": "MACD", "macd_signal": "signal"}
    frame = view.crossovers
    left, right = st.columns(2)
    for column, direction in ((left, "bullish"), (right, "bearish")):
        chosen = frame[frame["direction"] == direction] if not frame.empty else frame
        with column:
            st.markdown(f"**{direction.capitalize()}** · {len(chosen):,}")
            table(chosen.head(TOP * 2), crossings, f"cross-{direction}", f"No {direction} crossover.")


ui.guarded(page)
