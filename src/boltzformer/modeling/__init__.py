"""Model components, one small module each (see docs/ARCHITECTURE.md)."""
