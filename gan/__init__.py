"""gan engine of medcrowd (its issue is open; nothing here yet)."""
