"""Media: probing uploads (probe), then transcoding, posters and the upload pipeline."""
