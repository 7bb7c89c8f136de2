"""The "For You" feed: ranking what a viewer may want to watch next."""
