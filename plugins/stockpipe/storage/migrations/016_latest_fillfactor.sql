-- market.latest_1m is rewritten whole every minute in the market-wide mode (10,000 symbols a
-- micro-batch). With the default fillfactor (100) its pages are full, so each update put the new
-- row version on another page — not a HOT update: a new primary-key entry every time, and a table
-- that grew by a full copy a minute until autovacuum came (69 MB for 10,000 rows after 30 minutes,
-- bench: docs/benchmarks.md "Stream burst"). Half-empty pages let every update stay on its page
-- (HOT: no index entry; the dead version is pruned on the page's next visit): 5 MB after the same
-- 30 minutes, every update HOT. Only pages written from now on are affected; the next updates move
-- rows of full pages once.
ALTER TABLE market.latest_1m SET (fillfactor = 50);
