"""Traffic Light System adapter: zones, market risk, allocation recommendations and their events."""
