"""``python -m modules.provider_host``: what ``pulumi-resource-pulumi-python`` runs (see the package)."""

from modules.provider_host import serve

if __name__ == "__main__":
    serve()
