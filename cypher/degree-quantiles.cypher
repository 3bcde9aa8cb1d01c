// description: Degree distribution of users and items for one relationship type (min, quantiles, max, mean).
// params: dataset:str, type:str
CALL {
  MATCH (u:User {dataset: $dataset})
  RETURN 'user' AS side, COUNT { (u)-[r]->() WHERE type(r) = $type } AS degree
  UNION ALL
  MATCH (i:Item {dataset: $dataset})
  RETURN 'item' AS side, COUNT { ()-[r]->(i) WHERE type(r) = $type } AS degree
}
RETURN side, min(degree) AS min, percentileDisc(degree, 0.25) AS p25, percentileDisc(degree, 0.5) AS p50,
       percentileDisc(degree, 0.9) AS p90, percentileDisc(degree, 0.99) AS p99, max(degree) AS max,
       round(avg(degree), 2) AS mean
