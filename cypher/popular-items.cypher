// description: The most interacted items of one dataset for one relationship type.
// params: dataset:str, type:str, limit:count=10
MATCH (i:Item {dataset: $dataset})
WITH i, COUNT { ()-[r]->(i) WHERE type(r) = $type } AS interactions
ORDER BY interactions DESC, i.id
LIMIT $limit
RETURN i.id AS item, interactions
