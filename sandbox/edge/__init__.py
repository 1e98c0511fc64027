"""The sandbox's edge: an ingress controller of its own in front of nginx, and the monitoring configs.

- :mod:`sandbox.edge.routes` turns Ingresses, Services, Endpoints, Pods and NetworkPolicies into an
  nginx configuration, the way ingress-nginx routes (see docs/sandbox.md for what it honours), and
  pods into Prometheus file-based discovery targets;
- :mod:`sandbox.edge.netpol` decides whether a NetworkPolicy lets the ingress controller reach a pod;
- :mod:`sandbox.edge.controller` is ``python -m sandbox.edge``: it lists and watches the emulated
  Kubernetes API with the sandbox kubeconfig, runs nginx and reloads it when the routes change;
- :mod:`sandbox.edge.monitoring` writes the Prometheus and Alertmanager configurations.
"""
