"""Tests of the serving tier."""
