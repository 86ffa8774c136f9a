"""Signed over-the-air updates: keys, COSE_Sign1 (cose), manifests and key lists (manifest), agent bundles (bundle), the host's transfer (transfer) and staged rollouts (rollout)."""
