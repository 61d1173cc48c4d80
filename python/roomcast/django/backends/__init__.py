"""Import paths of dwebsocket kept for drop-in use."""
