"""``python -m bulkgene``: the same as the ``bulkgene`` command."""

from bulkgene.cli.main import main

main()
