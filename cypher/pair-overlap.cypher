// description: (user, item) pairs with the upstream behavior, with the downstream one, and with both: funnel conversion = both / upstream; cascade violations = downstream - both.
// params: dataset:str, upstream:str, downstream:str
CALL {
  MATCH (u:User {dataset: $dataset})-[a]->(:Item) WHERE type(a) = $upstream RETURN count(*) AS upstream_pairs
}
CALL {
  MATCH (u:User {dataset: $dataset})-[b]->(i:Item) WHERE type(b) = $downstream
  RETURN count(*) AS downstream_pairs,
         count(CASE WHEN EXISTS { MATCH (u)-[a]->(i) WHERE type(a) = $upstream } THEN 1 END) AS both_pairs
}
RETURN upstream_pairs, downstream_pairs, both_pairs,
       CASE WHEN upstream_pairs = 0 THEN null ELSE toFloat(both_pairs) / upstream_pairs END AS conversion,
       downstream_pairs - both_pairs AS violations
