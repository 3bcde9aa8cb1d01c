// description: Relationships of one dataset per type (base behaviors and derived unique relations) and split.
// params: dataset:str
MATCH (u:User {dataset: $dataset})-[r]->(:Item)
WHERE type(r) <> 'RECOMMENDED'  // written back by graphrec recommend; not part of the interaction graph
RETURN type(r) AS type, coalesce(r.split, r.holdout) AS split, count(*) AS relationships
ORDER BY type, split
