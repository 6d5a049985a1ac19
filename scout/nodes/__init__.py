"""One module per node of Scout's graph."""
