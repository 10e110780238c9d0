"""steerops: experiment-tracked activation steering and probing for Hugging Face LMs."""

__version__ = "0.1.0"
