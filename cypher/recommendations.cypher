// description: Recommendations written back by `graphrec recommend --write-back` for one user, per run, best first.
// params: dataset:str, user:str, run:str=
MATCH (u:User {dataset: $dataset, id: $user})-[r:RECOMMENDED]->(i:Item)
WHERE $run = '' OR r.run = $run
RETURN r.run AS run, r.model AS model, r.rank AS rank, i.id AS item, r.score AS score
ORDER BY run, rank
