"""Kafka: topics, partitions, end offsets, consumer groups with their lag, the last messages of a topic."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui

settings = data.settings()
st.title("Kafka")
st.caption(f"Broker {settings.kafka_bootstrap}")


def page() -> None:
    include_internal = st.toggle("Show internal topics", key="internal")
    topics = data.kafka_topics(include_internal)
    if topics.empty:
        ui.empty_state("No topics yet.")
        return
    summary = (
        topics.groupby("topic")
        .agg(partitions=("partition", "count"), messages=("messages", "sum"), end_offset=("end_offset", "sum"))
        .reset_index()
    )
    needle = st.text_input("Filter topics", key="filter")
    shown = summary[summary["topic"].str.contains(needle, regex=False)] if needle else summary
    cols = st.columns(3)
    cols[0].metric("Topics", f"{len(summary):,}")
    cols[1].metric("Partitions", f"{int(summary['partitions'].sum()):,}")
    cols[2].metric("Messages retained", f"{int(summary['messages'].sum()):,}")
    st.dataframe(shown, hide_index=True, width="stretch", key="topics")

    names = shown["topic"].tolist() or summary["topic"].tolist()
    default = names.index(settings.kafka_topic) if settings.kafka_topic in names else 0
    topic = st.selectbox("Topic", names, index=default, key="topic")
    left, right = st.columns([1, 2])
    with left:
        st.markdown("**Partitions**")
        st.dataframe(
            topics[topics["topic"] == topic].drop(columns="topic"), hide_index=True, width="stretch", key="partitions"
        )
    with right:
        count = st.number_input("Last messages", min_value=1, max_value=500, value=20, key="count")
        tail = data.kafka_tail(topic, int(count))
        st.dataframe(tail, hide_index=True, width="stretch", key="tail")

    st.subheader("Consumer groups")
    groups = data.kafka_consumer_groups()
    if groups.empty:
        st.caption(
            "No consumer group has committed offsets. The Spark streaming query keeps its offsets in its "
            "checkpoint instead: its lag is on the Pipeline page."
        )
    else:
        per_group = groups.groupby(["group", "topic"]).agg(partitions=("partition", "count"), lag=("lag", "sum"))
        st.dataframe(per_group.reset_index(), hide_index=True, width="stretch", key="groups")
        with st.expander("Per partition"):
            st.dataframe(groups, hide_index=True, width="stretch")


ui.guarded(page)
