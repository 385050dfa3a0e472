"""`charrnn serve`: the HTTP app, the batching worker, what is served and its card, and the
playground page."""
