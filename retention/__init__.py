"""Retention rules and jobs: ten-year keeping, deletion, closure, purge."""
