"""The sample domain: categories and their products."""
