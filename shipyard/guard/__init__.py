"""Guards: detectors and policies over plain text; they never import shipyard.runtime."""
