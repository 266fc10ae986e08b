"""Plotly figures: each function takes frames from ``data.py`` and returns a figure (no I/O)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stockpipe.calendar import NEW_YORK

UP, DOWN = "#26a69a", "#ef5350"
TEMPLATE = "plotly_white"


def _local(ts: pd.Series) -> pd.Series:
    """Times as New York wall-clock (naive), which is what a trader reads on the axis."""
    return pd.to_datetime(ts, utc=True).dt.tz_convert(NEW_YORK).dt.tz_localize(None)


def _values(series: pd.Series) -> list:
    # NaN → None: plotly leaves a gap there (warm-up of an indicator), never a zero.
    return [None if pd.isna(v) else float(v) for v in series]


def _break_gaps(frame: pd.DataFrame, longest: pd.Timedelta) -> pd.DataFrame:
    """Insert an empty row into every hole longer than ``longest``: the line stops there instead
    of drawing a straight segment over missing bars."""
    ts = pd.to_datetime(frame["ts"], utc=True)
    holes = ts.diff() > longest
    if not holes.any():
        return frame
    breaks = pd.DataFrame({"ts": ts[holes] - pd.Timedelta(seconds=1)})
    return pd.concat([frame.assign(ts=ts), breaks]).sort_values("ts", kind="stable").reset_index(drop=True)


def sparkline(frame: pd.DataFrame, rising: bool | None = None) -> go.Figure:
    """A tiny close-price line without axes, for an overview tile."""
    color = "#888888" if rising is None else (UP if rising else DOWN)
    frame = _break_gaps(frame[["ts", "close"]], pd.Timedelta(minutes=5))
    fig = go.Figure(
        go.Scatter(
            x=_local(frame["ts"]),
            y=_values(frame["close"]),
            mode="lines",
            line={"color": color, "width": 1.5},
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        height=70,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        showlegend=False,
        xaxis={"visible": False},
        yaxis={"visible": False},
        template=TEMPLATE,
    )
    return fig


def price_chart(
    frame: pd.DataFrame, symbol: str, overlays: set[str], title: str = "", alerts: pd.DataFrame | None = None
) -> go.Figure:
    """Candlesticks + overlays, volume, RSI(14) with 30/70 bands and MACD(12,26,9), sharing the x axis;
    ``alerts`` (fired user alerts: ts, close, description) as markers on the candles."""
    x = _local(frame["ts"])
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.025,
        row_heights=[0.52, 0.14, 0.16, 0.18],
        subplot_titles=("", "Volume", "RSI 14", "MACD 12/26/9"),
    )
    fig.add_trace(
        go.Candlestick(
            x=x,
            open=frame["open"],
            high=frame["high"],
            low=frame["low"],
            close=frame["close"],
            name=symbol,
            increasing_line_color=UP,
            decreasing_line_color=DOWN,
        ),
        row=1,
        col=1,
    )
    lines = {
        "SMA 20": ("sma_20", "#1f77b4", "solid"),
        "SMA 50": ("sma_50", "#ff7f0e", "solid"),
        "EMA 12": ("ema_12", "#9467bd", "dot"),
        "EMA 26": ("ema_26", "#8c564b", "dot"),
    }
    for label, (column, color, dash) in lines.items():
        if label in overlays and column in frame:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=_values(frame[column]),
                    name=label,
                    mode="lines",
                    line={"color": color, "width": 1.2, "dash": dash},
                ),
                row=1,
                col=1,
            )
    if "Bollinger" in overlays and "bb_upper" in frame:
        band = {"color": "rgba(120,120,120,0.6)", "width": 1}
        fig.add_trace(
            go.Scatter(x=x, y=_values(frame["bb_upper"]), name="BB upper", mode="lines", line=band), row=1, col=1
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_values(frame["bb_lower"]),
                name="BB lower",
                mode="lines",
                line=band,
                fill="tonexty",
                fillcolor="rgba(120,120,120,0.08)",
            ),
            row=1,
            col=1,
        )
    if alerts is not None and not alerts.empty:
        fig.add_trace(
            go.Scatter(
                x=_local(pd.to_datetime(alerts["ts"], utc=True)),
                y=alerts["close"],
                name="Alerts",
                mode="markers",
                marker={"symbol": "star", "size": 11, "color": "#d62728", "line": {"width": 1, "color": "white"}},
                text=alerts["description"],
                hovertemplate="%{text}<extra>alert</extra>",
            ),
            row=1,
            col=1,
        )
    colors = [UP if c >= o else DOWN for o, c in zip(frame["open"], frame["close"], strict=True)]
    fig.add_trace(go.Bar(x=x, y=frame["volume"], name="Volume", marker_color=colors, showlegend=False), row=2, col=1)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=_values(frame["rsi_14"]),
            name="RSI 14",
            mode="lines",
            line={"color": "#6a3d9a", "width": 1.2},
            showlegend=False,
        ),
        row=3,
        col=1,
    )
    for level, color in ((70, DOWN), (30, UP)):
        fig.add_hline(y=level, line={"color": color, "dash": "dash", "width": 1}, row=3, col=1)
    hist = frame["macd_hist"]
    fig.add_trace(
        go.Bar(
            x=x,
            y=_values(hist),
            name="MACD hist",
            showlegend=False,
            marker_color=[UP if (v or 0) >= 0 else DOWN for v in _values(hist)],
        ),
        row=4,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=_values(frame["macd"]),
            name="MACD",
            mode="lines",
            line={"color": "#1f77b4", "width": 1.2},
            showlegend=False,
        ),
        row=4,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=_values(frame["macd_signal"]),
            name="Signal",
            mode="lines",
            line={"color": "#ff7f0e", "width": 1.2},
            showlegend=False,
        ),
        row=4,
        col=1,
    )
    fig.update_yaxes(range=[0, 100], row=3, col=1)
    fig.update_layout(
        height=820,
        template=TEMPLATE,
        title=title or None,
        xaxis_rangeslider_visible=False,
        margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        hovermode="x unified",
    )
    return fig


def batches_chart(frame: pd.DataFrame) -> go.Figure:
    """Streaming micro-batches over time: input rows/s (left) and latency p50/p95 (right)."""
    x = _local(frame["ts"])
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("Input rows / s", "Bar latency (event → stored), ms"),
    )
    fig.add_trace(go.Bar(x=x, y=frame["rows_per_s"], name="rows/s", marker_color="#1f77b4"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=x, y=_values(frame["latency_p50_ms"]), name="p50", mode="lines+markers", marker={"size": 3}),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(x=x, y=_values(frame["latency_p95_ms"]), name="p95", mode="lines+markers", marker={"size": 3}),
        row=2,
        col=1,
    )
    fig.update_layout(
        height=420,
        template=TEMPLATE,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.1},
    )
    return fig


def lag_chart(frame: pd.DataFrame, title: str = "Lag per partition (messages)") -> go.Figure:
    fig = go.Figure(go.Bar(x=[str(p) for p in frame["partition"]], y=frame["lag"], marker_color="#ff7f0e"))
    fig.update_layout(
        height=260, template=TEMPLATE, title=title, xaxis_title="partition", margin={"l": 10, "r": 10, "t": 40, "b": 10}
    )
    return fig
