"""Portfolio Management System adapter: composition, metrics, optimisation recommendations, events."""
