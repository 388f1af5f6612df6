"""Command-line entry points, the `nnssl_*` console scripts of pyproject.toml (argparse): each entry function (`main`,
or `main_btcv` / `main_abdomenct1k` in `convert`) takes `argv` and returns an exit code; `errors.cli_entry` turns bad
input into one line and exit code 1. The top layer: docs/ARCHITECTURE.md, "Layers: what each may import"."""
