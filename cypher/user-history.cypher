// description: Everything one user did in one dataset: behavior, item, split and timestamp.
// params: dataset:str, user:str
MATCH (u:User {dataset: $dataset, id: $user})-[r]->(i:Item)
RETURN type(r) AS type, i.id AS item, r.split AS split, r.ts AS ts, r.holdout AS holdout
ORDER BY type, item
