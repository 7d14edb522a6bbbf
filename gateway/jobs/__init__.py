"""Jobs: one SQL statement under an agreement, from submission to released result."""
