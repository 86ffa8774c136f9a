"""Hardware-in-the-loop rig: virtual boards, rig files, pytest plugin."""
