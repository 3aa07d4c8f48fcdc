"""Developer tooling: `python -m devtools --help`."""
