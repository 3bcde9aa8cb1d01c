"""graphrec: a graph-database-backed GNN recommender for multi-behavior e-commerce data."""

__version__ = "0.1.0"
