"""Helpers shared by the test modules: one concern per module, so that no test module
imports another (tests/test_test_layout.py checks that)."""
