"""A small real Django project every server type serves in the tests and the benchmark.

Celery tasks will live next to it (`sampleproject.tasks`) once the worker issue lands.
"""
