// description: Every dataset in the database with its status, behaviors, node counts and ingest time.
// params:
MATCH (d:Dataset)
RETURN d.name AS dataset, d.status AS status, d.behaviors AS behaviors, d.split_method AS split,
       d.n_users AS users, d.n_items AS items, toString(d.ingested_at) AS ingested_at
ORDER BY dataset
