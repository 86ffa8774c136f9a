"""Signed over-the-air updates: keys, COSE_Sign1 (cose), manifests and key lists (manifest); bundles come later."""
