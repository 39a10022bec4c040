"""Celery task modules: thin wrappers that load rows by id and call one dropship service."""
