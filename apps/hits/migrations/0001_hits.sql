-- Every hit, durably: the source of truth.
CREATE TABLE hits (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Counters kept in the same transaction as the hits they count, so the page never scans
-- `hits`. Each writer task of each instance owns its own rows (instance_id, shard): no row is
-- shared by two writers, so concurrent commits never wait on one another.
CREATE TABLE hit_totals (
    instance_id text     NOT NULL,
    shard       smallint NOT NULL,
    hits        bigint   NOT NULL,
    PRIMARY KEY (instance_id, shard)
) WITH (fillfactor = 50);

-- Per-minute buckets for "hits in the last 24 hours": at most 1440 minutes x writers rows
-- are summed, whatever the size of `hits`.
CREATE TABLE hit_minutes (
    minute      timestamptz NOT NULL,
    instance_id text        NOT NULL,
    shard       smallint    NOT NULL,
    hits        bigint      NOT NULL,
    PRIMARY KEY (minute, instance_id, shard)
) WITH (fillfactor = 70);
