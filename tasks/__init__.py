"""Celery tasks: thin wrappers that pass ids and call into `workers/`."""
