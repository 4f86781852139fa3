"""pdm-operator: GitLab post-deployment migrations as Kubernetes Jobs."""

__version__ = "0.1.0"
