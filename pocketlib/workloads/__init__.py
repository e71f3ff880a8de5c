"""Workloads that run through the store: the main job (sort) lives here."""
