"""Alerts: the rules editor (as the rules role), a live feed of Redis ``stockpipe:alerts`` and the history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui
from stockpipe.alerts.rules import EXAMPLES, RuleError
from stockpipe.storage import alerts as alerts_store

settings = data.settings()
STATUSES = ["all", "fired", "retracted", "historical"]

st.title("Alerts")
st.caption(
    "Rules fire on the stream, from the stored indicator values of each new or corrected bar: once per rule, "
    "symbol and bar. A correction that undoes a crossing marks the alert retracted."
)


def editor() -> None:
    with st.form("new-rule", clear_on_submit=False, border=True):
        st.markdown("**New rule**")
        left, middle, right, far = st.columns([1, 3, 1, 2])
        symbol = left.text_input("Symbol", value="*", help="a ticker, or * for every symbol", key="rule-symbol")
        condition = middle.text_input(
            "Condition", placeholder=EXAMPLES[0], help="one of: " + "; ".join(EXAMPLES), key="rule-condition"
        )
        cooldown = right.number_input("Cool-down (min)", min_value=0, max_value=10080, value=0, key="rule-cooldown")
        webhook = far.text_input("Webhook (optional)", placeholder="https://hooks.slack.com/…", key="rule-webhook")
        if st.form_submit_button("Add rule", type="primary"):
            try:
                rule = data.change_rules(alerts_store.add_rule, symbol, condition, int(cooldown), webhook or None)
            except RuleError as error:
                st.error(f"Rule not stored: {error}", icon=":material/error:")
            else:
                st.success(f"Rule {rule.id} added: {rule.symbol} · {rule.description}", icon=":material/check:")
    st.caption("Conditions: " + " · ".join(f"`{e}`" for e in EXAMPLES))

    rules = data.alert_rules()
    if not rules:
        st.info("No rules yet: add one above.", icon=":material/notifications_off:")
        return
    table = pd.DataFrame(
        [
            {
                "id": r.id,
                "symbol": r.symbol,
                "condition": r.description,
                "cool-down (min)": r.cooldown_minutes,
                "webhook": "own" if r.webhook_url else "global",
                "enabled": r.enabled,
            }
            for r in rules
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch", key="rules-table")
    labels = {r.id: f"{r.id} · {r.symbol} · {r.description}" for r in rules}
    pick, enable, delete = st.columns([4, 1, 1], vertical_alignment="bottom")
    chosen = pick.selectbox("Rule", list(labels), format_func=labels.get, key="rule-pick")
    current = next(r for r in rules if r.id == chosen)
    if enable.button("Disable" if current.enabled else "Enable", key="rule-toggle"):
        data.change_rules(alerts_store.set_rule_enabled, chosen, not current.enabled)
        st.rerun()
    if delete.button("Delete", key="rule-delete"):
        data.change_rules(alerts_store.delete_rule, chosen)
        st.rerun()


@st.fragment(run_every=1.0)
def live_feed() -> None:
    ui.guarded(feed)


def feed() -> None:
    st.subheader("Live")
    messages = data.alert_feed()
    if not messages:
        st.caption(f"Listening on Redis `{settings.redis_alerts_channel}`: new alerts show here as they are delivered.")
        return
    for m in messages[:10]:
        icon = ":material/undo:" if m["status"] == "retracted" else ":material/notifications_active:"
        st.markdown(f"{icon} **{m['symbol']}** {ui.ny_stamp(pd.Timestamp(m['ts']))} · {m['condition']} · {m['status']}")


def history() -> None:
    st.subheader("History")
    rules = {r.id: f"{r.id} · {r.description}" for r in data.alert_rules()}
    left, middle, right = st.columns(3)
    symbols = ["all", *data.known_symbols(tuple(settings.watchlist))]
    symbol = left.selectbox("Symbol", symbols, key="history-symbol")
    status = middle.selectbox("Status", STATUSES, key="history-status")
    rule = right.selectbox("Rule", ["all", *rules], format_func=lambda r: rules.get(r, r), key="history-rule")
    frame = data.alert_history(
        None if symbol == "all" else symbol, None if status == "all" else status, None if rule == "all" else rule
    )
    if frame.empty:
        st.caption("No alerts match.")
        return
    shown = frame[["ts", "symbol", "description", "status", "close", "value", "delivery", "webhook_status", "fired_at"]]
    st.dataframe(shown.rename(columns={"ts": "bar", "description": "condition"}), hide_index=True, width="stretch")


ui.guarded(editor)
live_feed()
ui.guarded(history)
