"""`python -m midillm_lite` runs the CLI."""

from .cli import main

main()
