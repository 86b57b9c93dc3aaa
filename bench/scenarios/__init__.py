"""One module per scenario; each returns a ``Result`` (figures beside their ceilings)."""
