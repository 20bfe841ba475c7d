"""Test doubles that run over real HTTP, for testing and benchmarking without a model."""
