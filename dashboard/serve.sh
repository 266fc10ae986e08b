#!/usr/bin/env bash
# supervisord's [program:dashboard]: Streamlit on 127.0.0.1:STOCKPIPE_DASHBOARD_PORT (read from the
# settings, so .env changes apply on restart), headless, no usage statistics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
port=$("$PY" -c 'from stockpipe.config import get_settings; print(get_settings().dashboard_port)')
exec "$PY" -m streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port "$port" \
  --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer
