"""``rlalign demo``: placeholder replaced below."""
