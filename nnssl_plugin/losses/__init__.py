"""One loss per file, each a pure function over embeddings (equation and paper in its docstring)."""
