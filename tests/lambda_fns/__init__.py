"""Handlers that tests run in LocalLambda environments (importable by those processes)."""
