"""Social features: follows, blocks, likes, comments, shares, notifications, and the one
authorisation function that decides who may see or act on what (``access``)."""
