"""Method families, one folder each (docs/ARCHITECTURE.md, "The methods"). Kept free of imports: a family's
config is read by the foundation layer without torch modules."""
