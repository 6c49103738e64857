"""Building blocks that several families share."""
