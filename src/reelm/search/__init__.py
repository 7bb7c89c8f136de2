"""Search over public data: people (handle, name, bio), hashtags and captions."""
