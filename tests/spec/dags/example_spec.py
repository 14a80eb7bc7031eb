"""A tiny DAG so the spec plan has a DAG release to ship (the bundle is elided in the golden files)."""
