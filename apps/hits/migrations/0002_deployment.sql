-- One row naming the deployment this database belongs to. The Redis cache's keys carry its
-- id, so deployments with different databases can share one Redis without reading each
-- other's figures, while every instance on this database shares one cache.
CREATE TABLE deployment (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        uuid    NOT NULL DEFAULT gen_random_uuid()
);

INSERT INTO deployment DEFAULT VALUES;
