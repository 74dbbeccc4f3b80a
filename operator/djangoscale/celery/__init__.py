"""Celery workers: the `djangoscale worker` entry point and queue-length autoscaling.

- `worker`: runs a Celery worker with fair scheduling and acks late, plus a /healthz the kubelet
  can probe without a broker round trip (imports celery only; never kopf).
- `queues`: the pure bookkeeping (broker keys, per-pod values, hold-last on a broker outage).
- `brokers`: reading ready + unacknowledged messages from RabbitMQ's management API or Redis.
- `handlers`: kopf glue (worker pod index, one polling daemon per DjangoService).

Nothing is imported here, so `djangoscale.celery.worker` stays light.
"""
