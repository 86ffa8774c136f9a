"""Signed over-the-air updates: keys, manifests, bundles (later issues)."""
