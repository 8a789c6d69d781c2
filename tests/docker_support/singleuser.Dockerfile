# The single-user image the DockerSpawner end-to-end test starts: the local Python base with
# the same JupyterHub as the hub (the hub and jupyterhub-singleuser must agree) and jupyter_server.
ARG BASE_IMAGE=local/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN pip install --no-cache-dir "jupyterhub==6.1.1" "jupyter_server>=2,<3"
CMD ["jupyterhub-singleuser", "--allow-root"]
