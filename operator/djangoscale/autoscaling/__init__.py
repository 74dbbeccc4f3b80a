"""RPS autoscaling: the operator collects requests per second from its pods and serves them to
the HPA as `custom.metrics.k8s.io/v1beta2`, so no Prometheus or prometheus-adapter is needed.

- `windows`: the pure math (counter deltas, stable and panic windows, burst rule, hold-last).
- `collector`: scraping the pods' `metrics` port (or querying Prometheus) and the status to write.
- `apiserver`: the HTTPS server the API aggregation layer proxies to.
- `handlers`: kopf glue (pod index, one collecting daemon per DjangoService, server lifecycle).
"""
