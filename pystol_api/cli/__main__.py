"""`python -m pystol_api.cli`: the `pystol` console script (how `pystol up` starts children)."""

from pystol_api.cli.commands import main

main()
