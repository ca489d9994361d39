"""Tools for developing murder (the embedded lab of `make demo`, `make bench` and tests); never installed."""
