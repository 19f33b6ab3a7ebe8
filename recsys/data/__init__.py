"""Data pipeline: events (read + validate) -> splits -> vocab -> sequences -> collate.

Deliberately imports nothing: ``recsys.inference`` imports ``recsys.data.vocab`` and must
not pull in pandas, so import ``recsys.data.events`` explicitly where it is needed.
"""
