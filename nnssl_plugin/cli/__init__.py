"""Command-line entry points (argparse); each `main(argv)` returns an exit code."""
