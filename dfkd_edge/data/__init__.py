"""Eval-data loading and the built-in digits demo data."""
