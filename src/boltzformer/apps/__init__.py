"""Applications built on the library: the web app and its load test, the demo, the study,
the benchmarks and the throughput tool. They import the library below them; the `commands/`
layer above parses arguments and calls them."""
