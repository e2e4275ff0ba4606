"""Small private helpers, one concern per module."""
