"""stockpipe dashboard: ``.venv/bin/python -m streamlit run dashboard/app.py`` from the checkout
(``make up`` runs it on 127.0.0.1:8501 through ``dashboard/serve.sh``).

``python -m`` puts the checkout on ``sys.path``, so the pages import ``dashboard.*``; ``stockpipe``
is installed in the venv (editable).
"""

from __future__ import annotations

import streamlit as st

from dashboard import data

st.set_page_config(page_title="stockpipe", page_icon=":material/show_chart:", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/market.py", title="Market", icon=":material/trending_up:", url_path="market"),
    st.Page("pages/symbol.py", title="Symbol", icon=":material/candlestick_chart:", url_path="symbol"),
    st.Page("pages/pipeline.py", title="Pipeline", icon=":material/monitor_heart:", url_path="pipeline"),
    st.Page("pages/kafka.py", title="Kafka", icon=":material/hub:", url_path="kafka"),
    st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
]
navigation = st.navigation(pages)

with st.sidebar:
    settings = data.settings()
    st.caption(
        f"Source: **{settings.source_name}** · PostgreSQL {data.pg_where(settings)} · "
        f"Redis {data.redis_where(settings)} · Kafka {settings.kafka_bootstrap}"
    )
    if st.button("Refresh data", help="Forget cached queries and read every service again"):
        data.clear_caches()
    try:
        market_plan = data.market_plan()
    except data.ServiceDown:  # the pages say that Redis is down
        market_plan = {}
    if market_plan.get("plan") in ("delayed", "end-of-day"):  # the producer's one sentence, on every page
        st.warning(market_plan["sentence"], icon=":material/schedule:")

navigation.run()
