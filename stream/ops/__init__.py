"""What operators watch: Prometheus metrics, logs, health endpoints, and the probe behind
`segstream check`."""
