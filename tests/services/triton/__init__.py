"""Tests against a real tritonserver (the session fixture `triton`)."""
