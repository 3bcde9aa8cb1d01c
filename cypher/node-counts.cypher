// description: User and item nodes of one dataset.
// params: dataset:str
CALL {
  MATCH (u:User {dataset: $dataset}) RETURN 'User' AS label, count(u) AS nodes
  UNION ALL
  MATCH (i:Item {dataset: $dataset}) RETURN 'Item' AS label, count(i) AS nodes
}
RETURN label, nodes
