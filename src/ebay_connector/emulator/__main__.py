"""``python -m ebay_connector.emulator``: run the emulator standalone (see serve.main)."""

from ebay_connector.emulator.serve import main

raise SystemExit(main())
