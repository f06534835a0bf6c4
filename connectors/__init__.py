"""Sources at the edge: read social platforms, normalise to Post, publish to Kafka."""
