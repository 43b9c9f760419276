"""Feedback on responses: ratings and corrections stored with the request they name (tenant-scoped),
and the corrected examples they make for the self-improvement loop (``llmos.loop``)."""

from llmos.feedback.shapes import Example, expected_shape, normalise, to_rows
from llmos.feedback.store import FeedbackIn, FeedbackOut, FeedbackStore

__all__ = ["Example", "FeedbackIn", "FeedbackOut", "FeedbackStore", "expected_shape", "normalise", "to_rows"]
