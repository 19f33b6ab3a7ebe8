"""recsys: sequential recommendation with Transformers, evaluated on the full catalogue."""

__version__ = "0.1.0"
