"""mvcl: multi-view contrastive learning losses and training in JAX."""

from setuptools import find_packages, setup

setup(
    name="mvcl",
    version="0.1.0",
    description="Multi-view contrastive losses (MV-InfoNCE, MV-DHEL and baselines) as "
    "global-batch JAX kernels, with a training stack for scaling studies.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["mvcl", "mvcl.*"]),
    install_requires=[
        "jax>=0.10.2",
        "flax",
        "optax",
        "orbax-checkpoint",
        "tensorflow-datasets",
        "importlib_resources",  # tfds needs it on Python 3.11 but does not declare it
        "array_record",
        "ml-collections",
        "chex",
        "numpy",
        "scikit-learn",  # the bundled digits data set
        "pillow",
        "dm-pix",
        "tensorboard",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist",
            "scipy",
            "nbformat",
            "nbclient",
            "ipykernel",
            "ruff",  # .ci/run lints and checks the formatting
        ],
    },
)
