"""Underwriting System adapter: loan parameters, portfolio impact analyses and loan events."""
