"""Candidates: the models under test."""
