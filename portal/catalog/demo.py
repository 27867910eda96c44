"""The demo catalog: two images built from the local base, two pull references."""

from __future__ import annotations

from django.conf import settings

from portal.audit.services import Actor
from portal.catalog import services
from portal.catalog.models import Image, ImageBuild, SourceType
from portal.catalog.services import SourceSpec

JUPYTER_COMMAND = ["jupyter-lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.allow_remote_access=True"]


def demo_images() -> list[dict]:
    base = settings.DOCKYARD_BASE_IMAGE
    return [
        {
            "slug": "python-minimal",
            "source": SourceSpec(source_type=SourceType.BUILD, base_image=base),
            "details": {
                "name": "Python (minimal)",
                "description": "Debian bookworm with Python 3.11 and a virtualenv. Small and quick to start; for jobs.",
                "framework": "Python",
                "framework_version": "3.11",
                "python_version": "3.11",
            },
        },
        {
            "slug": "jupyter-scipy",
            "source": SourceSpec(
                source_type=SourceType.BUILD,
                base_image=base,
                pip_requirements=("jupyterlab>=4", "numpy>=2", "pandas>=2", "matplotlib>=3.8"),
            ),
            "details": {
                "name": "JupyterLab + SciPy",
                "description": "JupyterLab with numpy, pandas and matplotlib.",
                "framework": "SciPy",
                "framework_version": "2",
                "python_version": "3.11",
                "default_command": JUPYTER_COMMAND,
            },
        },
        {
            "slug": "pytorch-cuda",
            "source": SourceSpec(source_type=SourceType.PULL, pull_ref="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"),
            "details": {
                "name": "PyTorch 2.5 (CUDA 12.4)",
                "description": "The official PyTorch runtime image with CUDA and cuDNN.",
                "framework": "PyTorch",
                "framework_version": "2.5.1",
                "python_version": "3.11",
                "cuda_version": "12.4",
                "gpu_capable": True,
                "default_command": ["python"],
            },
        },
        {
            "slug": "tensorflow-gpu",
            "source": SourceSpec(source_type=SourceType.PULL, pull_ref="tensorflow/tensorflow:2.18.0-gpu"),
            "details": {
                "name": "TensorFlow 2.18 (GPU)",
                "description": "The official TensorFlow image with GPU support.",
                "framework": "TensorFlow",
                "framework_version": "2.18.0",
                "python_version": "3.11",
                "cuda_version": "12.3",
                "gpu_capable": True,
                "default_command": ["python"],
            },
        },
    ]


def seed_catalog(changes: list[str], *, build: bool = True) -> None:
    """Creates missing demo images; queues builds of the buildable ones not built yet."""
    actor = Actor.system()
    for entry in demo_images():
        image = Image.objects.filter(slug=entry["slug"]).first()
        if image is None:
            image = services.image_create(
                slug=entry["slug"], source=entry["source"], details=entry["details"], by=None, actor=actor
            )
            changes.append(f"image {image.slug}")
        if build and _needs_build(image) and entry["source"].source_type == SourceType.BUILD:
            services.image_build(image=image, by=None, actor=actor)
            changes.append(f"build of {image.slug} queued")


def _needs_build(image: Image) -> bool:
    if image.current_revision_id:
        return False
    active = ImageBuild.objects.filter(revision__image=image, status__in=ImageBuild.Status.active())
    return not active.exists()
