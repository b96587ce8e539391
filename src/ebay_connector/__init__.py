"""ebay-connector: connects eBay seller accounts over OAuth and keeps their tokens alive."""

__version__ = "0.1.0"
