"""Socket.IO edge node: holds client connections, authenticates them, validates
events and hands them to `realtime.actions`. Run with `python -m edge`."""
