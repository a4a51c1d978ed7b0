"""Pixel data handling: where frames lie in stored files."""
