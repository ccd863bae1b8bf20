"""Build once, serve many: the archive cache, the build lock, the tee and signed redirects."""
