"""SVP labeling service: the HTTP api. Nothing below this package imports torch."""
