-- Compaction (issue 15). Every instance id leaves counter rows behind; compaction folds the
-- `hit_totals` rows of instances with no hit for a while into this one row, so the page reads
-- a bounded number of rows however many instance ids have ever existed. The page adds
-- `hits` to the live counters' sum: the total stays exact.
CREATE TABLE hit_totals_retired (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Distinct instance ids whose rows were ever folded here (see `retired_instances`).
    instances bigint  NOT NULL DEFAULT 0,
    hits      bigint  NOT NULL DEFAULT 0
);

INSERT INTO hit_totals_retired DEFAULT VALUES;

-- Every instance id ever folded, so that an id folded twice (it came back, then left again)
-- counts once in `hit_totals_retired.instances`. Written by compaction only; no request
-- reads it.
CREATE TABLE retired_instances (
    instance_id text PRIMARY KEY
);
