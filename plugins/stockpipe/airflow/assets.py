"""What the DAGs write, as Airflow assets (lineage in the UI; downstream DAGs can be asset-scheduled)."""

from airflow.sdk import Asset

BARS_TOPIC = Asset(name="kafka.stock-prices", uri="stockpipe://kafka/stock-prices", group="stockpipe")
BARS_TABLE = Asset(name="market.bars_1m", uri="stockpipe://postgres/market/bars_1m", group="stockpipe")
INDICATORS_TABLE = Asset(
    name="market.indicators_1m", uri="stockpipe://postgres/market/indicators_1m", group="stockpipe"
)
ROLLUPS = Asset(name="market.rollups", uri="stockpipe://postgres/market/rollups", group="stockpipe")
DATA_QUALITY = Asset(name="ops.data_quality", uri="stockpipe://postgres/ops/data_quality", group="stockpipe")
